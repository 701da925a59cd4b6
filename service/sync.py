"""Keep an in-memory index snapshot in step with the active Redis version, and keep serving without Redis.

A daemon thread subscribes to the events channel (``sa2crq:events``), then (re)syncs: it loads
the active version's snapshot (trie, attribute columns, payload field names) if the version
changed, else replays the version's log (cold-start inserts, attribute updates) after the last
entry it applied. Events only trigger that same resync, so a lost message costs nothing: the log, not the
channel, is the source of truth. Subscribing before resyncing closes the gap where an event could
slip between the two.

When Redis goes away the last good trie keeps serving; the thread retries with exponential
backoff and resyncs on reconnection (reloading if the active version changed meanwhile).
``state()`` says which version is served, whether Redis is reachable and the last error: the
service's readiness probe reports "degraded" from it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.background import Follower
from sidcore.errors import DataError
from sidcore.index.embedded import resolve_url
from sidcore.index.keys import DEFAULT_PREFIX, Keys
from sidcore.index.redis_index import RedisIndex
from sidcore.index.snapshot import IndexSnapshot
from sidcore.index.trie import Trie

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)


@dataclass(frozen=True)
class SyncState:
    connected: bool
    version: str | None  # the version of the trie being served
    num_sids: int
    num_items: int
    last_sync: float | None  # unix time of the last successful sync with Redis
    last_error: str | None
    generation: int  # bumps on every swap of the served trie


def _stream_id(text: str) -> tuple[int, int]:
    """A Redis stream id ("1700000000000-3") as a comparable pair."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class TrieSync(Follower):
    """``TrieSync(url).start()``; read ``.snapshot`` (or just its ``.trie``) per request, an immutable
    view, and ``.state()``.

    It follows the active version, or with ``version`` one fixed version (a release's index) and
    only that version's inserts and attribute updates.
    """

    def __init__(
        self, url: str | None = None, prefix: str = DEFAULT_PREFIX, backoff: tuple[float, float] = (0.1, 5.0), poll: float = 0.5,
        version: str | None = None,
    ):
        self.url = resolve_url(url)
        self.version = version
        self.keys = Keys(prefix)
        self.backoff = backoff
        self.poll = poll
        self._snapshot: IndexSnapshot | None = None
        self._log_id = "0-0"
        self._lock = threading.Lock()
        self._connected = False
        self._last_sync: float | None = None
        self._last_error: str | None = None
        self._generation = 0
        super().__init__(f"trie-sync-{version or 'active'}")

    @property
    def snapshot(self) -> IndexSnapshot | None:
        return self._snapshot

    @property
    def trie(self) -> Trie | None:
        snap = self._snapshot
        return snap.trie if snap else None

    def has_applied(self, version: str, log_id: str) -> bool:
        """Whether the served snapshot is of ``version`` and includes its log entry ``log_id``."""
        with self._lock:
            snap, last = self._snapshot, self._log_id
        return snap is not None and snap.version == version and (not log_id or _stream_id(last) >= _stream_id(log_id))

    def state(self) -> SyncState:
        with self._lock:
            t = self.trie
            return SyncState(
                connected=self._connected,
                version=t.version if t else None,
                num_sids=t.num_sids if t else 0,
                num_items=t.num_items if t else 0,
                last_sync=self._last_sync,
                last_error=self._last_error,
                generation=self._generation,
            )

    def __enter__(self) -> "TrieSync":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the thread ---------------------------------------------------------------------------
    def _client(self) -> redis.Redis:
        # No silent retries inside redis-py: an outage must surface here so we can resync after it.
        return redis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2, socket_timeout=30, health_check_interval=5
        )

    def _run(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            client = self._client()
            try:
                with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(self.keys.channel)
                    index = RedisIndex(client, self.keys.prefix)
                    self._resync(index)
                    delay = self.backoff[0]
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=self.poll)
                        if message is not None and self._concerns_us(message):
                            self._resync(index)
            except _REDIS_DOWN as e:
                self._set(connected=False, last_error=f"Redis unreachable at {self.url}: {e}")
            except DataError as e:
                self._set(connected=True, last_error=str(e))
            except Exception as e:  # noqa: BLE001 - a dead sync thread would freeze the trie silently
                self._set(connected=False, last_error=f"index sync failed: {e!r}")
            finally:
                client.close()
            self._stop.wait(delay)
            delay = min(delay * 2, self.backoff[1])

    def _concerns_us(self, message: dict) -> bool:
        try:
            event = json.loads(message["data"])
        except (ValueError, TypeError):
            return False
        if not isinstance(event, dict):
            return False
        current = self._snapshot.version if self._snapshot else None
        return (event.get("type") == "activate" and self.version is None) or event.get("version") in (current, self.version)

    def _resync(self, index: RedisIndex) -> None:
        active = self.version or index.active()
        current = self._snapshot
        if active is None:
            note = f"no active index version in Redis; serving {current.version}" if current else "no active index version in Redis yet"
            self._set(connected=True, last_error=note, synced=True)
            return
        if current is None or current.version != active:
            snap, log_id = index.load_snapshot(active)
        else:
            expected = index.meta(active)["num_items"]  # read before the log: inserts only add
            events, log_id = index.events_since(active, self._log_id)
            snap = current.apply(events)
            if snap.trie.num_items < expected:  # the log lost entries we never saw (e.g. Redis restored from a backup)
                snap, log_id = index.load_snapshot(active)
            elif snap is current:
                self._set(connected=True, last_error=None, synced=True)
                return
        with self._lock:
            self._snapshot, self._log_id = snap, log_id
            self._generation += 1
        self._set(connected=True, last_error=None, synced=True)
        self._ready.set()

    def _set(self, connected: bool, last_error: str | None, synced: bool = False) -> None:
        with self._lock:
            self._connected = connected
            self._last_error = last_error
            if synced:
                self._last_sync = time.time()
