"""What a running service holds: decoder, engine, trie sync, retriever, batcher, metrics.

``Runtime.open`` builds everything ready to serve, or raises: it loads the decoder, connects to
Redis (or starts an embedded one and publishes the decoder's own index into it), waits for the
first index snapshot, builds the engine, warms it up and starts the batcher. Requests are checked
with ``validate`` and queued with ``submit_many``; the index snapshot is taken per batch. ``close`` stops it all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import redis
import torch

from model_store import Store
from service.batching import Job, MicroBatcher
from service.metrics import Metrics, WindowStats
from service.settings import Settings
from service.sync import TrieSync
from sidcore.decoder.bundle import Decoder, load_decoder
from sidcore.engines.base import Engine
from sidcore.errors import UnavailableError
from sidcore.index.embedded import EmbeddedRedis
from sidcore.index.redis_index import InsertResult, RedisIndex
from sidcore.index.snapshot import IndexSnapshot
from sidcore.retriever import IndexMismatch, Query, Result, Retriever

log = logging.getLogger("sa2crq.service")

InsertItems = Callable[[RedisIndex, list], InsertResult]
"""Cold start: ``(index, new items as posted) -> InsertResult``. The service does not encode items
itself (that needs the indexer's quantizers); whoever starts it passes this in, e.g.
``sa2crq.wiring.insert_items``. Without it, POST /items answers 403."""


class NotReady(UnavailableError):
    """No servable index yet (none published, or one the decoder cannot decode)."""


@dataclass(frozen=True)
class Readiness:
    status: str  # "ready" | "degraded" | "not_ready"
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.status != "not_ready"


class Runtime:
    """A serving service's parts, all present: build one with ``await Runtime.open(...)``."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        decoder: Decoder,
        sync: TrieSync,
        engine: Engine,
        retriever: Retriever,
        redis_url: str,
        embedded: EmbeddedRedis | None,
        insert_items: InsertItems | None,
    ):
        self.settings = settings
        self.metrics = metrics
        self.stats = WindowStats(settings.stats_window_s)
        self.decoder = decoder
        self.sync = sync
        self.engine = engine
        self.retriever = retriever
        self.redis_url = redis_url
        self.embedded = embedded
        self.insert_items = insert_items
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
        store = Store(s.store)
        device = s.device if s.engine == "torch" else "cpu"
        decoder = await asyncio.to_thread(load_decoder, store, s.decoder_version, device)
        embedded = None
        if s.redis_url:
            redis_url = s.redis_url
        else:
            embedded = await asyncio.to_thread(_embedded_redis, store, decoder.spec.index_version, s.redis_prefix)
            redis_url = embedded.url
        sync = TrieSync(redis_url, s.redis_prefix).start()
        engine = None
        try:
            if not await asyncio.to_thread(sync.wait_ready, s.ready_timeout_s):
                log.warning("no index in Redis after %.0f s: %s; serving 503 until one is published", s.ready_timeout_s, sync.state().last_error)
            engine = await asyncio.to_thread(_engine, s, decoder)
            retriever = Retriever(decoder, engine, s.beam_width, s.max_beam_width, int(s.filter_cache_mb * 2**20))
            rt = cls(s, metrics, decoder, sync, engine, retriever, redis_url, embedded, insert_items)
            await asyncio.to_thread(rt._warm_up)
        except BaseException:
            if engine is not None:
                engine.close()
            sync.stop()
            if embedded:
                embedded.close()
            raise
        metrics.model_info.labels(decoder.version, s.engine).set(1)
        rt.batcher.start()
        rt.refresh()
        log.info("service ready in %.1f s: decoder %s, engine %s, index %s", time.perf_counter() - started,
                 decoder.version, s.engine, sync.state().version)
        return rt

    async def close(self) -> None:
        await self.batcher.stop()
        await asyncio.to_thread(self.engine.close)
        self.redis.close()
        self.sync.stop()
        if self.embedded:
            self.embedded.close()

    def _warm_up(self) -> None:
        """One decode at the default and the widest beam, so the first requests pay no set-up
        (the second with an exclusion, which builds the trie's move table)."""
        snap = self.sync.snapshot
        if snap is None:
            return
        try:
            self.retriever.check(snap.trie)
        except IndexMismatch as e:
            log.error("%s", e)
            return
        some_item = snap.trie.item(0) if snap.trie.num_items else None
        for width in {self.settings.beam_width, self.settings.max_beam_width}:
            exclude = (some_item,) if some_item and width == self.settings.max_beam_width else ()
            self.retriever.retrieve(snap, [Query(query="warm up", k=width, beam_width=width, exclude_ids=exclude)])

    # -- serving ------------------------------------------------------------------------------
    def snapshot(self) -> IndexSnapshot:
        snap = self.sync.snapshot
        if snap is None:
            raise NotReady(f"not ready: {self.sync.state().last_error or 'no index loaded yet'}")
        return snap

    def readiness(self) -> Readiness:
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

    def submit_many(self, queries: list[Query], checked_on: IndexSnapshot | None = None) -> list[asyncio.Future]:
        """Queue requests, all or none (raises QueueFull); ``checked_on``: the snapshot they were
        validated against, which spares the batch checking them again if it is still the one served."""
        return self.batcher.submit_many([(q, checked_on) for q in queries])

    def validate(self, snap: IndexSnapshot, query: Query) -> None:
        """Unknown history ids, a bad beam width or filter fail here, before queueing."""
        self.retriever.validate(snap, query)

    def _process(self, jobs: list[Job]) -> None:
        """One batch, one index snapshot. Runs in a batcher thread."""
        snap = self.snapshot()
        ok: list[Job] = []
        for job in jobs:
            query, checked_on = job.payload
            try:
                if checked_on is not snap:  # the index changed since submit
                    self.retriever.validate(snap, query)
                ok.append(job)
            except ValueError as e:
                self.batcher.fail(job, e)
        if not ok:
            return
        started = time.perf_counter()
        results, stats = self.retriever.retrieve(snap, [j.payload[0] for j in ok])
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
        state = self.sync.state()
        m.set_index(state.version, state.num_sids, state.num_items)
        m.redis_up.set(1 if state.connected else 0)
        m.ready.set({"ready": 1.0, "degraded": 0.5}.get(self.readiness().status, 0.0))
        m.queue_depth.set(self.batcher.depth)

    redis_errors = (redis.ConnectionError, redis.TimeoutError)
    """What ``payloads`` raises when Redis cannot answer."""

    async def payloads(self, version: str, item_ids: list[str]) -> list[dict | None]:
        """Stored fields of items, read from Redis per answer (replicas hold none in memory:
        titles of a 1M catalog would be hundreds of MB per replica). Fails fast while the index
        sync already knows Redis is down."""
        if not self.sync.state().connected:
            raise redis.ConnectionError(self.sync.state().last_error or "Redis unreachable")
        return await asyncio.to_thread(self.reader.payloads, version, item_ids)

    def redis_index(self) -> RedisIndex:
        """A short-lived client for writes (cold-start inserts); close it after use."""
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=10)
        return RedisIndex(client, self.settings.redis_prefix)


def _embedded_redis(store: Store, index_version: str, prefix: str) -> EmbeddedRedis:
    embedded = EmbeddedRedis().start()
    try:
        with embedded.client() as client:
            RedisIndex(client, prefix).publish(store, index_version, activate=True, progress=False)
    except BaseException:
        embedded.close()
        raise
    log.info("embedded Redis at %s holds index %s", embedded.url, index_version)
    return embedded


def _engine(s: Settings, decoder: Decoder) -> Engine:
    if s.engine == "vllm":
        from service.engines.vllm_engine import VLLMEngine

        kwargs = {} if s.device == "cpu" else {"gpu_memory_utilization": s.vllm_gpu_memory_utilization}
        return VLLMEngine(decoder, max_beam_width=s.max_beam_width, **kwargs)
    from sidcore.engines.torch_engine import TorchEngine

    return TorchEngine(decoder)
