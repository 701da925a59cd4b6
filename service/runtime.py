"""What a running service holds: decoder, engine, trie sync, retriever, batcher, metrics.

``Runtime.start`` loads the decoder, connects to Redis (or starts an embedded one and publishes
the decoder's own index into it), waits for the first trie, builds the engine, warms it up and
starts the batcher. Requests then go through ``retrieve``; the trie snapshot is taken per batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Sequence

import redis
import torch

from model_store import Store
from service.batching import Job, MicroBatcher
from service.decoder.bundle import load_decoder
from service.engines.base import Engine
from service.index.embedded import EmbeddedRedis
from service.index.redis_index import RedisIndex
from service.index.sync import TrieSync
from service.metrics import Metrics, WindowStats
from service.retriever import IndexMismatch, Query, Result, Retriever
from service.settings import Settings

log = logging.getLogger("sa2crq.service")


class NotReady(RuntimeError):
    """No servable index yet (none published, or one the decoder cannot decode)."""


@dataclass(frozen=True)
class Readiness:
    status: str  # "ready" | "degraded" | "not_ready"
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.status != "not_ready"


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.stats = WindowStats(settings.stats_window_s)
        self.embedded: EmbeddedRedis | None = None
        self.sync: TrieSync | None = None
        self.engine: Engine | None = None
        self.retriever: Retriever | None = None
        self.batcher: MicroBatcher | None = None
        self.redis_url: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        if s.torch_threads:
            torch.set_num_threads(s.torch_threads)
        started = time.perf_counter()
        store = Store(s.store)
        self.decoder = decoder = await asyncio.to_thread(load_decoder, store, s.decoder_version, s.device if s.engine == "torch" else "cpu")
        self.redis_url = s.redis_url or await asyncio.to_thread(self._embedded_redis, store, decoder.spec.index_version)
        self.sync = TrieSync(self.redis_url, s.redis_prefix).start()
        if not await asyncio.to_thread(self.sync.wait_ready, s.ready_timeout_s):
            log.warning("no index in Redis after %.0f s: %s; serving 503 until one is published", s.ready_timeout_s, self.sync.state().last_error)
        self.engine = await asyncio.to_thread(self._engine)
        self.retriever = Retriever(decoder, self.engine, s.beam_width, s.max_beam_width)
        self.metrics.model_info.labels(decoder.version, s.engine).set(1)
        await asyncio.to_thread(self._warm_up)
        self.batcher = MicroBatcher(
            self._process, s.max_batch, s.max_wait_ms / 1000, s.queue_size, s.concurrent_batches, on_batch=self._on_batch
        )
        self.batcher.start()
        self.refresh()
        log.info("service ready in %.1f s: decoder %s, engine %s, index %s", time.perf_counter() - started,
                 decoder.version, s.engine, self.sync.state().version)

    async def stop(self) -> None:
        if self.batcher:
            await self.batcher.stop()
        if self.engine is not None and hasattr(self.engine, "close"):
            await asyncio.to_thread(self.engine.close)
        if self.sync:
            self.sync.stop()
        if self.embedded:
            self.embedded.close()

    def _embedded_redis(self, store: Store, index_version: str) -> str:
        self.embedded = EmbeddedRedis().start()
        with self.embedded.client() as client:
            RedisIndex(client, self.settings.redis_prefix).publish(store, index_version, activate=True, progress=False)
        log.info("embedded Redis at %s holds index %s", self.embedded.url, index_version)
        return self.embedded.url

    def _current_mask(self):
        return self.retriever.mask(self._trie())

    def _engine(self) -> Engine:
        s = self.settings
        if s.engine == "vllm":
            from service.engines.vllm_engine import VLLMEngine

            kwargs = {} if s.device == "cpu" else {"gpu_memory_utilization": s.vllm_gpu_memory_utilization}
            return VLLMEngine(self.decoder, self._current_mask, max_beam_width=s.max_beam_width, **kwargs)
        from service.engines.torch_engine import TorchEngine

        return TorchEngine(self.decoder, self._current_mask)

    def _warm_up(self) -> None:
        """One decode at the default and the widest beam, so the first requests pay no set-up."""
        trie = self.sync.trie
        if trie is None:
            return
        try:
            self.retriever.check(trie)
        except IndexMismatch as e:
            log.error("%s", e)
            return
        for width in {self.settings.beam_width, self.settings.max_beam_width}:
            self.retriever.retrieve(trie, [Query(query="warm up", k=width, beam_width=width)])

    # -- serving ------------------------------------------------------------------------------
    def _trie(self):
        trie = self.sync.trie if self.sync else None
        if trie is None:
            raise NotReady(self.sync.state().last_error if self.sync else "starting")
        return trie

    def readiness(self) -> Readiness:
        if self.batcher is None:
            return Readiness("not_ready", "starting")
        state = self.sync.state()
        if self.sync.trie is None:
            return Readiness("not_ready", state.last_error or "no index loaded yet")
        try:
            self.retriever.check(self.sync.trie)
        except IndexMismatch as e:
            return Readiness("not_ready", str(e))
        if not state.connected:
            return Readiness("degraded", f"serving index {state.version} from memory: {state.last_error}")
        return Readiness("ready", None)

    def submit(self, query: Query) -> asyncio.Future:
        """Check the request against the current index, then queue it (raises QueueFull)."""
        self.retriever.prompt(self._trie(), query)  # unknown history ids fail here, before queueing
        self.retriever.plan(query)
        return self.batcher.submit(query)

    def _process(self, jobs: list[Job]) -> None:
        """One batch, one trie snapshot. Runs in a batcher thread."""
        trie = self._trie()
        ok: list[Job] = []
        for job in jobs:
            try:
                self.retriever.prompt(trie, job.payload)  # the index may have flipped since submit
                ok.append(job)
            except ValueError as e:
                self.batcher.fail(job, e)
        if not ok:
            return
        started = time.perf_counter()
        results, stats = self.retriever.retrieve(trie, [j.payload for j in ok])
        m = self.metrics
        m.decode_seconds.observe(time.perf_counter() - started)
        for group in stats.groups:
            m.decode_steps.observe(group.steps)
            for depth, n in group.finished_per_depth.items():
                m.beams_finished.labels(str(depth)).inc(n)
        for job, result in zip(ok, results):
            self.batcher.resolve(job, result)

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
        state = self.sync.state() if self.sync else None
        if state:
            m.set_index(state.version, state.num_sids, state.num_items)
            m.redis_up.set(1 if state.connected else 0)
        m.ready.set({"ready": 1.0, "degraded": 0.5}.get(self.readiness().status, 0.0))
        m.queue_depth.set(self.batcher.depth if self.batcher else 0)

    def redis_index(self) -> RedisIndex:
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=10)
        return RedisIndex(client, self.settings.redis_prefix)
