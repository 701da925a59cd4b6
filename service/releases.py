"""What a replica serves: one release at a time, swapped between batches.

``Served`` is one loaded release: its decoder, engine and retriever, and the trie of its index
(kept current with cold-start inserts by its own ``TrieSync``). ``ReleaseFollower``, a thread,
watches the target release (the active one, or the pinned ``SA2CRQ_RELEASE``) and loads a new
target beside the one serving: the decoder fetched from Redis and checksum-verified into a local
cache, the engine built, the index's trie loaded, one warm-up decode. Only then does it swap the
one reference batches read; a batch holds the ``Served`` it started with to its end, so no answer
mixes two releases, and the old release's engine is closed once its last batch has finished.

A target that cannot be loaded (a checksum failure, out of memory, a pair whose fingerprints
differ) leaves the current release serving; the error is reported (``state()``: readiness,
metrics) and the load retried with backoff. Replicas heartbeat what they serve, so ``gc`` keeps it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from model_store import Store
from service.background import Follower
from service.sync import TrieSync
from sidcore.decoder.bundle import Decoder, load_decoder
from sidcore.engines.base import Engine
from sidcore.index.artifact import check_pair
from sidcore.index.keys import Keys
from sidcore.index.redis_index import RedisIndex
from sidcore.index.releases import HEARTBEAT_TTL_S, Release
from sidcore.retriever import Query, Retriever

log = logging.getLogger("sa2crq.service")

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Served:
    """One loaded release. ``hold()`` it for a whole batch; ``retire`` closes what the next one does not reuse."""

    def __init__(self, release: Release, decoder: Decoder, engine: Engine, retriever: Retriever, sync: TrieSync):
        self.release, self.decoder, self.engine, self.retriever, self.sync = release, decoder, engine, retriever, sync
        self._lock = threading.Lock()
        self._users = 0
        self._closing: Callable[[], None] | None = None

    @contextmanager
    def hold(self) -> Iterator["Served"]:
        with self._lock:
            self._users += 1
        try:
            yield self
        finally:
            with self._lock:
                self._users -= 1
                close = self._closing if self._users == 0 else None
                if close is not None:
                    self._closing = None
            if close is not None:
                close()

    def retire(self, successor: "Served | None") -> None:
        """Close the engine and trie sync the successor does not share, once no batch holds this."""

        def close() -> None:
            if successor is None or self.engine is not successor.engine:
                self.engine.close()
            if successor is None or self.sync is not successor.sync:
                self.sync.stop()

        with self._lock:
            if self._users:
                self._closing = close
                return
        close()


@dataclass(frozen=True)
class FollowerState:
    target: str | None  # the release this replica should serve (active or pinned)
    served: str | None  # the release it serves
    pinned: bool
    loading: str | None  # the release being loaded, if any
    last_error: str | None  # why the last load failed (cleared by a successful one)
    failures: int  # failed loads so far
    swaps: int  # releases swapped in so far


class ReleaseFollower(Follower):
    """Follows the target release and swaps it in when it is loaded; read ``served`` per batch.

    Args:
        url, prefix: the Redis index.
        build_engine: decoder -> engine (the torch or vLLM engine the settings ask for).
        retriever_args: ``Retriever`` keyword arguments (beam widths).
        cache: local store the decoders fetched from Redis are installed in (checksums verified).
        device: where decoders are loaded.
        pin: serve this release whatever is active (canaries, A/B tests); None follows the active one.
        replica_id: the name this replica heartbeats under.
        on_swap: called with (new, old) after every swap (metrics).
        on_failure: called with the error of every failed load (metrics).
        poll: seconds between checks of the target when no event arrives.
        retry: (first, longest) wait in seconds before loading a target that failed again.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        build_engine: Callable[[Decoder], Engine],
        retriever_args: dict,
        cache: Store,
        device: str = "cpu",
        pin: str | None = None,
        replica_id: str | None = None,
        on_swap: Callable[[Served, Served | None], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        poll: float = 1.0,
        retry: tuple[float, float] = (1.0, 30.0),
    ):
        self.url, self.keys = url, Keys(prefix)
        self.build_engine, self.retriever_args, self.cache, self.device = build_engine, retriever_args, cache, device
        self.pin, self.replica_id = pin, replica_id or default_replica_id()
        self.on_swap, self.on_failure = on_swap, on_failure
        self.poll, self.retry = poll, retry
        self._served: Served | None = None
        self._lock = threading.Lock()
        self._target: str | None = None
        self._loading: str | None = None
        self._last_error: str | None = None
        self._failures = 0
        self._swaps = 0
        self._replaced: Served | None = None  # swapped out, retired once the swap is announced
        self._failed: dict[str, tuple[float, float]] = {}  # release -> (retry at, current delay)
        super().__init__("release-follower")

    @property
    def served(self) -> Served | None:
        return self._served

    def state(self) -> FollowerState:
        with self._lock:
            served = self._served.release.name if self._served else None
            return FollowerState(self._target, served, self.pin is not None, self._loading, self._last_error, self._failures, self._swaps)

    def stop(self) -> None:
        super().stop()
        self._retire_replaced()
        served, self._served = self._served, None
        if served is not None:
            served.retire(None)

    # -- the thread ---------------------------------------------------------------------------
    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2, socket_timeout=30)

    def _run(self) -> None:
        delay = self.retry[0]
        while not self._stop.is_set():
            client = self._client()
            try:
                index = RedisIndex(client, self.keys.prefix)
                with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(self.keys.channel)
                    beat = 0.0
                    while not self._stop.is_set():
                        if self._follow(index):
                            beat = 0.0  # say at once what is served now
                        if time.monotonic() - beat > HEARTBEAT_TTL_S / 3:
                            self._heartbeat(index)
                            beat = time.monotonic()
                        self._retire_replaced()
                        delay = self.retry[0]
                        pubsub.get_message(timeout=self.poll)  # any event, or the poll interval, re-checks the target
            except _REDIS_DOWN as e:
                with self._lock:
                    self._last_error = f"Redis unreachable at {self.url}: {e}"
            except Exception as e:  # noqa: BLE001 - a dead follower would pin the replica to a release silently
                log.exception("release follower failed")
                with self._lock:
                    self._last_error = f"release follower failed: {e!r}"
            finally:
                client.close()
            self._stop.wait(delay)
            delay = min(delay * 2, self.retry[1])

    def _follow(self, index: RedisIndex) -> bool:
        """Load the target release if it is not the one served; True when it swapped one in."""
        target = index.release(self.pin, required=False) if self.pin else index.active_release()
        with self._lock:
            self._target = target.name if target else None
            if target is None:
                self._last_error = f"release {self.pin!r} is not in Redis" if self.pin else "no active release in Redis yet"
        current = self._served
        if target is None or (current is not None and current.release == target):
            return False
        retry_at, _ = self._failed.get(target.name, (0.0, 0.0))
        if time.monotonic() < retry_at:
            return False
        return self._load(index, target, current)

    def _load(self, index: RedisIndex, target: Release, current: Served | None) -> bool:
        started = time.perf_counter()
        with self._lock:
            self._loading = target.name
        sync = None
        try:
            same_decoder = current is not None and current.decoder.version == target.decoder_version
            decoder = current.decoder if same_decoder else load_decoder(self.cache, index.fetch_decoder(target.decoder_version, self.cache).id, self.device)
            check_pair(target.index_version, index.meta(target.index_version)["fingerprint"], decoder.version, decoder.spec.index_fingerprint)
            engine = current.engine if same_decoder else self.build_engine(decoder)
            retriever = current.retriever if same_decoder else Retriever(decoder, engine, **self.retriever_args)
            try:
                same_index = current is not None and current.release.index_version == target.index_version
                sync = current.sync if same_index else TrieSync(self.url, self.keys.prefix, version=target.index_version).start()
                if not sync.wait_ready(60):
                    raise TimeoutError(f"index {target.index_version} did not load within 60 s: {sync.state().last_error}")
                snap = sync.snapshot
                retriever.check(snap.trie)
                # The first requests pay no set-up: both beam widths, and an exclusion (it builds the move table).
                some_item = (snap.trie.item(0),) if snap.trie.num_items else ()
                for width in {retriever.beam_width, retriever.max_beam_width}:
                    exclude = some_item if width == retriever.max_beam_width else ()
                    retriever.retrieve(snap, [Query(query="warm up", k=width, beam_width=width, exclude_ids=exclude)])
            except BaseException:
                if not same_decoder:
                    engine.close()
                raise
        except BaseException as e:  # noqa: BLE001 - any failure keeps the current release serving
            if sync is not None and (current is None or sync is not current.sync):
                sync.stop()
            self._failed_load(target, e)
            return False
        served = Served(target, decoder, engine, retriever, sync)
        with self._lock:
            self._served, self._loading, self._last_error = served, None, None
            self._swaps += 1
        self._failed.pop(target.name, None)
        self._ready.set()
        log.info("serving release %s (index %s, decoder %s); loaded in %.1f s", target.name, target.index_version,
                 target.decoder_version, time.perf_counter() - started)
        if self.on_swap:
            self.on_swap(served, current)
        self._replaced = current
        return True

    def _retire_replaced(self) -> None:
        # After the heartbeat: closing the old engine and trie sync can take seconds, and until the
        # replica says what it serves now, `live_replicas` (and gc) would still see the old release.
        replaced, self._replaced = self._replaced, None
        if replaced is not None:
            replaced.retire(self._served)

    def _failed_load(self, target: Release, error: BaseException) -> None:
        _, delay = self._failed.get(target.name, (0.0, self.retry[0] / 2))
        delay = min(delay * 2, self.retry[1])
        self._failed[target.name] = (time.monotonic() + delay, delay)
        with self._lock:
            self._loading = None
            self._failures += 1
            self._last_error = f"cannot load release {target.name}: {error}; retrying in {delay:.0f} s"
        log.error("%s", self._last_error)
        if self.on_failure:
            self.on_failure(error)

    def _heartbeat(self, index: RedisIndex) -> None:
        served = self._served
        state = {"release": served.release.name, "index_version": served.release.index_version,
                 "decoder_version": served.release.decoder_version} if served else {}
        index.heartbeat(self.replica_id, {**state, "pinned": self.pin, "target": self._target})

    def describe(self) -> dict:
        """The release facts /readyz and /stats report."""
        s = self.state()
        return {"release": s.served, "target_release": s.target, "pinned": s.pinned, "loading": s.loading,
                "release_error": s.last_error, "release_failures": s.failures, "release_swaps": s.swaps}

