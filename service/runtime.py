"""What a running service holds: the release it serves (via the follower), batcher, metrics.

``Runtime.open`` builds everything ready to serve: it connects to Redis (or starts an embedded one
and publishes the store's decoder and its index into it as a release), starts the release
follower (``service/releases.py``), waits for the first release to load and starts the batcher.
Requests are checked with ``validate`` and queued with ``submit_many``; each batch holds one
``Served`` release, whose index snapshot, decoder and engine answer the whole batch. ``close``
stops it all.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import redis
import torch

from model_store import Store
from service.batching import Job, MicroBatcher
from service.metrics import Metrics, WindowStats
from service.releases import ReleaseFollower, Served
from service.settings import Settings
from sidcore.decoder.bundle import Decoder
from sidcore.engines.base import Engine
from sidcore.errors import UnavailableError
from sidcore.index.embedded import EmbeddedRedis
from sidcore.index.redis_index import InsertResult, RedisIndex
from sidcore.index.releases import Release
from sidcore.index.snapshot import IndexSnapshot
from sidcore.retriever import IndexMismatch, Query, Result

log = logging.getLogger("sa2crq.service")

InsertItems = Callable[[RedisIndex, list], InsertResult]
"""Cold start: ``(index, new items as posted) -> InsertResult``. The service does not encode items
itself (that needs the indexer's quantizers); whoever starts it passes this in, e.g.
``sa2crq.wiring.insert_items``. Without it, POST /items answers 403."""


class NotReady(UnavailableError):
    """No servable release yet (none published, or none this replica could load)."""


@dataclass(frozen=True)
class Readiness:
    status: str  # "ready" | "degraded" | "not_ready"
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.status != "not_ready"


@dataclass(frozen=True)
class Answer:
    """A retrieval result and the release that produced it (one release per batch)."""

    result: Result
    release: Release


class Runtime:
    """A serving service's parts, all present: build one with ``await Runtime.open(...)``."""

    def __init__(self, settings: Settings, metrics: Metrics, follower: ReleaseFollower, redis_url: str,
                 embedded: EmbeddedRedis | None, insert_items: InsertItems | None, cache_dir: tempfile.TemporaryDirectory | None):
        self.settings = settings
        self.metrics = metrics
        self.stats = WindowStats(settings.stats_window_s)
        self.follower = follower
        self.redis_url = redis_url
        self.embedded = embedded
        self.insert_items = insert_items
        self._cache_dir = cache_dir
        self.batcher = MicroBatcher(self._process, settings.max_batch, settings.queue_size, settings.concurrent_batches, on_batch=self._on_batch)
        # Reads of stored item fields at answer time; short timeouts, since an answer waits on them.
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=1)
        self.reader = RedisIndex(self.redis, settings.redis_prefix)

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    async def open(cls, settings: Settings, metrics: Metrics, insert_items: InsertItems | None = None) -> "Runtime":
        s = settings
        if s.torch_threads:
            torch.set_num_threads(s.torch_threads)
        started = time.perf_counter()
        embedded = None
        if s.redis_url:
            redis_url = s.redis_url
        else:
            embedded = await asyncio.to_thread(_embedded_redis, Store(s.store), s.decoder_version, s.redis_prefix)
            redis_url = embedded.url
        cache_dir = None if s.cache_dir else tempfile.TemporaryDirectory(prefix="sa2crq-decoders-")
        cache = Store(s.cache_dir or cache_dir.name)
        retriever_args = {"beam_width": s.beam_width, "max_beam_width": s.max_beam_width, "filter_cache_bytes": int(s.filter_cache_mb * 2**20),
                          "item_weight": s.item_weight, "item_prior": s.item_prior, "fused_beams_per_item": s.fused_beams_per_item,
                          "head_proposals_per_item": s.head_proposals_per_item}
        follower = ReleaseFollower(
            redis_url, s.redis_prefix, lambda decoder: _engine(s, decoder), retriever_args, cache,
            device=s.device if s.engine == "torch" else "cpu", pin=s.release, replica_id=s.replica_id,
            on_swap=metrics.set_release, on_failure=lambda e: metrics.release_failures.labels(type(e).__name__).inc(),
        )
        rt = cls(s, metrics, follower, redis_url, embedded, insert_items, cache_dir)
        follower.start()
        if not await asyncio.to_thread(follower.wait_ready, s.ready_timeout_s):
            log.warning("no release served after %.0f s: %s; serving 503 until one loads", s.ready_timeout_s, follower.state().last_error)
        rt.batcher.start()
        rt.refresh()
        log.info("service up in %.1f s: release %s, engine %s", time.perf_counter() - started, follower.state().served, s.engine)
        return rt

    async def close(self) -> None:
        await self.batcher.stop()
        await asyncio.to_thread(self.follower.stop)
        self.redis.close()
        if self.embedded:
            self.embedded.close()
        if self._cache_dir is not None:
            self._cache_dir.cleanup()

    # -- serving ------------------------------------------------------------------------------
    def served(self) -> Served:
        served = self.follower.served
        if served is None or served.sync.snapshot is None:
            raise NotReady(f"not ready: {self.follower.state().last_error or 'no release loaded yet'}")
        return served

    def snapshot(self) -> IndexSnapshot:
        """The index snapshot of the release served now (what requests are validated against)."""
        return self.served().sync.snapshot

    def readiness(self) -> Readiness:
        served = self.follower.served
        if served is None or served.sync.trie is None:
            return Readiness("not_ready", self.follower.state().last_error or "no release loaded yet")
        try:
            served.retriever.check(served.sync.trie)
        except IndexMismatch as e:
            return Readiness("not_ready", str(e))
        state = served.sync.state()
        if not state.connected:
            return Readiness("degraded", f"serving index {state.version} from memory: {state.last_error}")
        return Readiness("ready", None)

    def validate(self, snap: IndexSnapshot, query: Query) -> None:
        """Unknown history ids, a bad beam width or filter fail here, before queueing."""
        self.served().retriever.validate(snap, query)

    def submit_many(self, queries: list[Query], checked_on: IndexSnapshot | None = None) -> list[asyncio.Future]:
        """Queue requests, all or none (raises QueueFull); ``checked_on``: the snapshot they were
        validated against, which spares the batch checking them again if it is still the one served."""
        return self.batcher.submit_many([(q, checked_on) for q in queries])

    def _process(self, jobs: list[Job]) -> None:
        """One batch, one release, one index snapshot. Runs in a batcher thread."""
        with self.served().hold() as served:
            snap = served.sync.snapshot
            ok: list[Job] = []
            for job in jobs:
                query, checked_on = job.payload
                try:
                    if checked_on is not snap:  # the index or the release changed since submit
                        served.retriever.validate(snap, query)
                    ok.append(job)
                except ValueError as e:
                    self.batcher.fail(job, e)
            if not ok:
                return
            started = time.perf_counter()
            results, stats = served.retriever.retrieve(snap, [j.payload[0] for j in ok])
        m = self.metrics
        m.decode_seconds.observe(time.perf_counter() - started)
        for group in stats.groups:
            m.decode_steps.observe(group.steps)
            for depth, n in group.finished_per_depth.items():
                m.beams_finished.labels(str(depth)).inc(n)
        for job, result in zip(ok, results):
            self.batcher.resolve(job, Answer(result, served.release))

    def _on_batch(self, jobs: Sequence[Job]) -> None:
        now = time.perf_counter()
        self.metrics.batch_size.observe(len(jobs))
        for job in jobs:
            self.metrics.queue_wait.observe(now - job.enqueued)

    def observe_result(self, result: Result) -> None:
        for item in result.items:
            self.metrics.sid_length.observe(len(item.sid))
        self.metrics.items_returned.observe(len(result.items))

    def refresh(self) -> None:
        """Bring the state gauges up to date (on every scrape, probe and /stats call)."""
        m = self.metrics
        served = self.follower.served
        state = served.sync.state() if served else None
        if state:
            m.set_index(state.version, state.num_sids, state.num_items)
        m.redis_up.set(1 if state and state.connected else 0)
        m.ready.set({"ready": 1.0, "degraded": 0.5}.get(self.readiness().status, 0.0))
        m.queue_depth.set(self.batcher.depth)

    def describe(self) -> dict:
        """What this replica serves, for /readyz and /stats."""
        served = self.follower.served
        state = served.sync.state() if served else None
        return {
            **self.follower.describe(),
            "index_version": state.version if state else None,
            "model_version": served.decoder.version if served else None,
            "length_penalty": served.engine.length_penalty if served else None,
            "item_weight": served.retriever.item_weight if served else None,
            "item_prior": served.retriever.item_prior if served else None,
            "num_sids": state.num_sids if state else 0,
            "num_items": state.num_items if state else 0,
            "redis": {"connected": state.connected, "last_sync": state.last_sync, "last_error": state.last_error} if state else None,
        }

    redis_errors = (redis.ConnectionError, redis.TimeoutError)
    """What ``payloads`` raises when Redis cannot answer."""

    async def payloads(self, version: str, item_ids: list[str]) -> list[dict | None]:
        """Stored fields of items, read from Redis per answer (replicas hold none in memory:
        titles of a 1M catalog would be hundreds of MB per replica). Fails fast while the index
        sync already knows Redis is down."""
        state = self.served().sync.state()
        if not state.connected:
            raise redis.ConnectionError(state.last_error or "Redis unreachable")
        return await asyncio.to_thread(self.reader.payloads, version, item_ids)

    def redis_index(self) -> RedisIndex:
        """A short-lived client for writes (cold-start inserts); close it after use."""
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=10)
        return RedisIndex(client, self.settings.redis_prefix)


def _embedded_redis(store: Store, decoder_version: str | None, prefix: str) -> EmbeddedRedis:
    """A private Redis holding the store's decoder and the index it was trained for, as the active release."""
    embedded = EmbeddedRedis().start()
    try:
        with embedded.client() as client:
            release = RedisIndex(client, prefix).publish_release(store, decoder_version=decoder_version, name="local", activate=True, progress=False)
    except BaseException:
        embedded.close()
        raise
    log.info("embedded Redis at %s serves release %s (index %s, decoder %s)", embedded.url, release.name,
             release.index_version, release.decoder_version)
    return embedded


def _engine(s: Settings, decoder: Decoder) -> Engine:
    if s.engine == "vllm":
        from service.engines.vllm_engine import VLLMEngine

        kwargs = {} if s.device == "cpu" else {"gpu_memory_utilization": s.vllm_gpu_memory_utilization}
        return VLLMEngine(decoder, max_beam_width=s.max_beam_width, length_penalty=s.length_penalty, **kwargs)
    from sidcore.engines.torch_engine import TorchEngine

    return TorchEngine(decoder, length_penalty=s.length_penalty)
