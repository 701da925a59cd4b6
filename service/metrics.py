"""Prometheus metrics (one registry per app, so several apps can live in one process) and /stats.

Latency buckets are 1-2.5-5 steps from 1 ms to 10 s, with extra steps between 10 and 100 ms so a
TP99 in that range reads to within ~10%.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.035, 0.04, 0.045, 0.05,
    0.06, 0.07, 0.08, 0.09, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)


class Metrics:
    """Every metric the service exports; the names are the contract with the Grafana dashboard."""

    def __init__(self, engine: str = "torch") -> None:
        self.engine = engine
        self.registry = r = CollectorRegistry()
        self.requests = Counter("sa2crq_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "sa2crq_request_latency_seconds", "Time from request arrival to response, by endpoint", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_wait = Histogram("sa2crq_queue_wait_seconds", "Time a request waited for its batch", buckets=LATENCY_BUCKETS, registry=r)
        self.decode_seconds = Histogram("sa2crq_decode_seconds", "Engine time per batch", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("sa2crq_batch_size", "Requests per decoded batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.queue_depth = Gauge("sa2crq_queue_depth", "Requests waiting for a batch", registry=r)
        self.decode_steps = Histogram("sa2crq_decode_steps", "Decode steps per batch group", buckets=(1, 2, 3, 4, 5, 6, 8, 10, 12, 16), registry=r)
        self.beams_finished = Counter("sa2crq_beams_finished", "Beams finished (SIDs completed), by depth", ["depth"], registry=r)
        self.sid_length = Histogram("sa2crq_result_sid_length", "Length of the SIDs of returned items", buckets=(1, 2, 3, 4, 5, 6, 8), registry=r)
        self.items_returned = Histogram("sa2crq_items_returned", "Items per answer", buckets=(0, 1, 5, 10, 20, 50, 100, 200, 500, 1000), registry=r)
        self.rejected = Counter("sa2crq_rejected", "Requests refused or dropped, by reason", ["reason"], registry=r)
        self.items_inserted = Counter("sa2crq_items_inserted", "Cold-start items inserted through POST /items", registry=r)
        self.index_info = Gauge("sa2crq_index_info", "1 for the index version being served", ["index_version"], registry=r)
        self.model_info = Gauge("sa2crq_model_info", "1 for the decoder version being served", ["model_version", "engine"], registry=r)
        self.release_info = Gauge("sa2crq_release_info", "1 for the release being served", ["release", "index_version", "model_version"], registry=r)
        self.release_swaps = Counter("sa2crq_release_swaps", "Releases swapped in (the first load included)", registry=r)
        self.release_failures = Counter("sa2crq_release_load_failures", "Releases that could not be loaded, by error type", ["error"], registry=r)
        self.trie_sids = Gauge("sa2crq_trie_sids", "SIDs in the served trie", registry=r)
        self.trie_items = Gauge("sa2crq_trie_items", "Items in the served trie", registry=r)
        self.redis_up = Gauge("sa2crq_redis_up", "1 if the index sync reaches Redis", registry=r)
        self.ready = Gauge("sa2crq_ready", "1 when ready, 0.5 when degraded (serving without Redis), 0 when not ready", registry=r)
        self._served_index: str | None = None

    def set_release(self, served, previous) -> None:
        """After a release swap (``ReleaseFollower.on_swap``): the info gauges name the new one."""
        if previous is not None:
            self.release_info.remove(previous.release.name, previous.release.index_version, previous.release.decoder_version)
            if previous.decoder.version != served.decoder.version:
                self.model_info.remove(previous.decoder.version, self.engine)
        r = served.release
        self.release_info.labels(r.name, r.index_version, r.decoder_version).set(1)
        self.model_info.labels(r.decoder_version, self.engine).set(1)
        self.release_swaps.inc()

    def set_index(self, version: str | None, num_sids: int, num_items: int) -> None:
        if version != self._served_index:
            if self._served_index is not None:
                self.index_info.remove(self._served_index)
            if version is not None:
                self.index_info.labels(version).set(1)
            self._served_index = version
        self.trie_sids.set(num_sids)
        self.trie_items.set(num_items)


class WindowStats:
    """Sliding-window QPS, latency quantiles and errors for ``GET /stats`` (no Prometheus needed)."""

    def __init__(self, window_s: float = 60.0, max_samples: int = 200_000):
        self.window = window_s
        self._events: deque[tuple[float, float, int]] = deque(maxlen=max_samples)  # (time, seconds, status)
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def record(self, seconds: float, status: int) -> None:
        with self._lock:
            self._events.append((time.monotonic(), seconds, status))

    def snapshot(self) -> dict:
        now = time.monotonic()
        with self._lock:
            while self._events and self._events[0][0] < now - self.window:
                self._events.popleft()
            events = list(self._events)
        span = min(self.window, now - self._started) or 1e-9
        latency = np.array([s for _, s, st in events if st < 400], dtype=np.float64)
        q = (lambda p: round(float(np.quantile(latency, p)) * 1000, 2)) if len(latency) else (lambda p: None)
        errors = sum(1 for *_, st in events if st >= 500)
        return {
            "window_s": round(span, 1),
            "requests": len(events),
            "qps": round(len(events) / span, 2),
            "p50_ms": q(0.5),
            "p99_ms": q(0.99),
            "client_errors": sum(1 for *_, st in events if 400 <= st < 500),
            "errors": errors,
            "error_rate": round(errors / len(events), 4) if events else 0.0,
        }
