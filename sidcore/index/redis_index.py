"""Index versions in Redis: publish, activate, list, garbage-collect, read (layout: ``keys.py``);
and the releases (index, decoder) replicas serve, with the decoders they need (``releases.py``).

Guarantees:
- A version becomes activatable only when its ``complete`` marker exists, and that marker is
  written last, by a script that first checks the publisher still holds the version's lease and
  that every hash holds exactly the expected number of entries. A publish that raises, is
  interrupted or whose process dies leaves at most a *partial* version, which ``activate``
  refuses and ``gc`` removes; the active version is never touched by a publish.
- Once a decoder is paired with the active index (a release), activation only moves to pairs whose
  quantizer fingerprints agree: an index rebuilt with another quantizer cannot be served by a
  decoder trained for the old one; ``activate_release`` flips index and decoder together.
- ``activate`` and ``gc`` run as WATCH/MULTI transactions on the active pointer and the version's
  marker, so gc can never delete a version that is being activated, nor activate one being deleted.
  (Both keys live outside one hash slot: this relies on a single primary, with or without
  replicas. On Redis Cluster the active pointer would have to move into the versions' slot.)
"""

from __future__ import annotations

import io
import json
import secrets
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import redis
from tqdm.auto import tqdm

from model_store import Store, Version
from sidcore.errors import ConflictError, DataError, NotFoundError, UnavailableError
from sidcore.index import releases
from sidcore.index.artifact import QUANTIZER_FILES, IndexArtifact, check_pair, load_index
from sidcore.index.attributes import Attributes, AttributeSpec, Column, check_value
from sidcore.index.keys import DEFAULT_PREFIX, Keys, VersionKeys, check_name
from sidcore.index.releases import Release
from sidcore.index.snapshot import AttributesSet, IndexSnapshot, Inserted, LogEvent
from sidcore.index.trie import Trie
from sidcore.sid import SID, format_sid, format_sids, parse_sid

LEASE_MS = 60_000
"""A publisher's claim on its version, renewed every chunk; gc leaves leased versions alone."""
SEGMENT_SIDS = 65_536
"""SIDs per snapshot segment: a few MB each, far below Redis's 512 MB value limit."""
UPDATE_CHUNK = 10_000
"""Items per attribute-update script call (and log entry): a few ms of Redis time each."""

# Redis builds the lookup hashes from one JSON argument per chunk: packing millions of separate
# HSET arguments in redis-py costs several times more than the whole write does in Redis.
_WRITE_CHUNK = """
-- KEYS: lease sid item row payload
-- ARGV: token lease_ms [[sid, ...], [item count, ...], [item, ...], [payload JSON or '', ...]] first_row
-- Item rows go to KEYS[4] unless first_row is '' (a version without attributes has no use for them).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('SA2CRQ lease lost: another publisher took this version over')
end
local chunk = cjson.decode(ARGV[3])
local sids, counts, items, payloads = chunk[1], chunk[2], chunk[3], chunk[4]
local first_row = tonumber(ARGV[4])
local sid_args, item_args, row_args, payload_args, at = {}, {}, {}, {}, 0
local function flush(key, args, limit)  -- HSET in slices: unpack() is limited to a few thousand values
  if #args > limit then redis.call('HSET', key, unpack(args)) return {} end
  return args
end
for g = 1, #sids do
  local sid, list = sids[g], {}
  for i = at + 1, at + counts[g] do
    list[#list + 1] = items[i]
    item_args[#item_args + 1] = items[i]
    item_args[#item_args + 1] = sid
    if first_row then
      row_args[#row_args + 1] = items[i]
      row_args[#row_args + 1] = first_row + i - 1
    end
    if payloads[i] ~= '' then
      payload_args[#payload_args + 1] = items[i]
      payload_args[#payload_args + 1] = payloads[i]
    end
    item_args = flush(KEYS[3], item_args, 4000)
    row_args = flush(KEYS[4], row_args, 4000)
    payload_args = flush(KEYS[5], payload_args, 4000)
  end
  at = at + counts[g]
  sid_args[#sid_args + 1] = sid
  sid_args[#sid_args + 1] = cjson.encode(list)
  sid_args = flush(KEYS[2], sid_args, 4000)
end
flush(KEYS[2], sid_args, 0)
flush(KEYS[3], item_args, 0)
flush(KEYS[4], row_args, 0)
flush(KEYS[5], payload_args, 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_FINALIZE = """
-- KEYS: lease meta complete, then the keys to verify; ARGV: token now, then per key to verify:
-- 'h' (its HLEN) or 's' (its STRLEN), and the expected number
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('SA2CRQ lease lost: another publisher took this version over')
end
for i = 4, #KEYS do
  local how, expected = ARGV[2 * i - 5], tonumber(ARGV[2 * i - 4])
  local got = how == 'h' and redis.call('HLEN', KEYS[i]) or redis.call('STRLEN', KEYS[i])
  if got ~= expected then
    return redis.error_reply('SA2CRQ incomplete: ' .. KEYS[i] .. ' holds ' .. got .. (how == 'h' and ' entries' or ' bytes') .. ', expected ' .. expected)
  end
end
redis.call('HSET', KEYS[2], 'completed', ARGV[2])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""

# Fixed-width encodings of a missing value, per attribute kind (sidcore.index.attributes); NaN
# spelled as numpy's bytes, since the sign of Lua's 0/0 depends on the CPU.
_LUA_MISSING = r"""local MISSING = {numeric = '\0\0\0\0\0\0\248\127', categorical = struct.pack('<i4', -1), boolean = struct.pack('b', -1)}"""

_INSERT = _LUA_MISSING + """
-- Cold-start inserts: the whole batch or nothing (any existing id refuses it), logged and announced.
-- New items take the next item rows; every attribute column grows by a missing value per item;
-- each item's payload (title, popularity, vector) is kept, to carry it to a later release.
-- KEYS: complete item sid meta log inserted row, then each attribute's column
-- ARGV: version channel items_json kinds_json (one kind per column), then (item, sid, item_json, payload_json)...
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('SA2CRQ version ' .. ARGV[1] .. ' is not complete')
end
for i = 5, #ARGV, 4 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then return {0, ARGV[i]} end
end
local kinds = cjson.decode(ARGV[4])
local row = tonumber(redis.call('HGET', KEYS[4], 'num_items'))
local new_sids, n = 0, (#ARGV - 4) / 4
for i = 5, #ARGV, 4 do
  local item, sid, encoded = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HSET', KEYS[2], item, sid)
  redis.call('HSET', KEYS[6], item, ARGV[i + 3])
  if #kinds > 0 then redis.call('HSET', KEYS[7], item, row) end
  row = row + 1
  local list = redis.call('HGET', KEYS[3], sid)
  if list then
    redis.call('HSET', KEYS[3], sid, string.sub(list, 1, -2) .. ',' .. encoded .. ']')
  else
    redis.call('HSET', KEYS[3], sid, '[' .. encoded .. ']')
    new_sids = new_sids + 1
  end
end
for a, kind in ipairs(kinds) do
  redis.call('APPEND', KEYS[7 + a], string.rep(MISSING[kind], n))
end
redis.call('HINCRBY', KEYS[4], 'num_items', n)
redis.call('HINCRBY', KEYS[4], 'num_sids', new_sids)
local id = redis.call('XADD', KEYS[5], '*', 'items', ARGV[3])
redis.call('PUBLISH', ARGV[2], cjson.encode({type = 'insert', version = ARGV[1], id = id, items = cjson.decode(ARGV[3])}))
return {1, id, new_sids}
"""

_SET_ATTRIBUTES = _LUA_MISSING + """
-- Attribute updates of one version, applied at once, logged and announced like inserts.
-- KEYS: complete log, then per attribute: its column and its codes hash
-- ARGV: version channel update_json, then per attribute: name kind
-- update_json: {"items": [...], "set": {name: [[row, ...], [value or null, ...]]}}; values are
-- checked by the caller. A categorical value seen for the first time gets the next code; the
-- log entry records those (value, code) pairs so replicas assign the very same codes.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('SA2CRQ version ' .. ARGV[1] .. ' is not complete')
end
local update = cjson.decode(ARGV[3])
local width = {categorical = 4, numeric = 8, boolean = 1}
local new_codes = {}
for a = 1, (#KEYS - 2) / 2 do
  local column, codes = KEYS[1 + 2 * a], KEYS[2 + 2 * a]
  local name, kind = ARGV[2 + 2 * a], ARGV[3 + 2 * a]
  local rows, values, added = update.set[name][1], update.set[name][2], {}
  for i = 1, #rows do
    local v, bytes = values[i], nil
    if v == cjson.null then
      bytes = MISSING[kind]
    elseif kind == 'numeric' then
      bytes = struct.pack('<d', v)
    elseif kind == 'boolean' then
      bytes = struct.pack('b', v and 1 or 0)
    else
      local code = redis.call('HGET', codes, v)
      if not code then
        code = redis.call('HLEN', codes)
        redis.call('HSET', codes, v, code)
        added[#added + 1] = {v, code}
      end
      bytes = struct.pack('<i4', tonumber(code))
    end
    redis.call('SETRANGE', column, rows[i] * width[kind], bytes)
  end
  if #added > 0 then new_codes[name] = added end
end
local id = redis.call('XADD', KEYS[2], '*', 'attributes', ARGV[3], 'codes', cjson.encode(new_codes))
redis.call('PUBLISH', ARGV[2], cjson.encode({type = 'attributes', version = ARGV[1], id = id}))
return id
"""


@dataclass(frozen=True)
class PublishResult:
    version: str
    num_sids: int
    num_items: int
    seconds: float
    published: bool  # False when the version was already complete in Redis
    activated: bool


@dataclass(frozen=True)
class InsertResult:
    version: str
    items: tuple[tuple[str, tuple[int, ...]], ...]  # (item id, SID) in the order they were appended
    new_sids: int
    log_id: str


@dataclass(frozen=True)
class UpdateResult:
    version: str
    items: int  # items updated
    log_id: str  # the last log entry written (one per UPDATE_CHUNK items)


@dataclass(frozen=True)
class VersionInfo:
    version: str
    state: str  # "complete", "publishing" (a live publisher holds it) or "partial" (failed or dead)
    active: bool
    method: str | None
    num_sids: int | None
    num_items: int | None
    published: float | None  # unix time the publish started


def _str(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def encode_segment(codes: np.ndarray, lengths: np.ndarray, counts: np.ndarray, ids: list[str]) -> bytes:
    encoded = [i.encode() for i in ids]
    buf = io.BytesIO()
    np.savez(
        buf,
        codes=codes.astype(np.int32),
        lengths=lengths.astype(np.int8),
        counts=counts.astype(np.int32),
        id_lengths=np.fromiter(map(len, encoded), dtype=np.int32, count=len(encoded)),
        id_bytes=np.frombuffer(b"".join(encoded), dtype=np.uint8),
    )
    return buf.getvalue()


class RedisIndex:
    """Index versions in one Redis; every method is safe to call from several processes."""

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX):
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("RedisIndex needs a client without decode_responses: snapshots and quantizer files are bytes")
        self.r = client
        self.keys = Keys(prefix)
        self._write_chunk = client.register_script(_WRITE_CHUNK)
        self._finalize = client.register_script(_FINALIZE)
        self._insert = client.register_script(_INSERT)
        self._set_attributes = client.register_script(_SET_ATTRIBUTES)

    def close(self) -> None:
        self.r.close()

    # -- publish ------------------------------------------------------------------------------
    def publish(self, store: Store, version: str | None = None, activate: bool = False, **kwargs) -> PublishResult:
        """Publish a store's index version (default: the store's active, else newest one)."""
        return self.publish_artifact(load_index(store, version), activate=activate, **kwargs)

    def publish_artifact(
        self,
        artifact: IndexArtifact,
        activate: bool = False,
        chunk_size: int = 10_000,
        progress: bool = True,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> PublishResult:
        """Write a version under its own namespace, mark it complete, optionally activate it.

        Idempotent: a version already complete in Redis is not rewritten. ``on_chunk(done, total)``
        runs after every chunk reached Redis (progress reporting; tests inject failures there).
        """
        t0 = time.perf_counter()
        v = artifact.version
        k = self.keys.of(v)
        if self.r.exists(k.complete):
            if activate:
                self.activate(v)
            return PublishResult(v, *self._counts(v), time.perf_counter() - t0, published=False, activated=activate)
        if not self.r.exists(k.lease):
            self._unlink_namespace(k)  # leftovers of a publisher that died or of an interrupted gc
        token = secrets.token_hex(8)
        if not self.r.set(k.lease, token, nx=True, px=LEASE_MS):
            raise ConflictError(f"version {v} is being published by another process right now")
        try:
            result = self._write(artifact, k, token, chunk_size, progress, on_chunk)
        except BaseException:
            # Release the lease so gc may collect the partial version at once; the error stands.
            try:
                if _str(self.r.get(k.lease)) == token:
                    self.r.delete(k.lease)
            except redis.RedisError:
                pass
            raise
        if activate:
            self.activate(v)
        return PublishResult(v, *result, time.perf_counter() - t0, published=True, activated=activate)

    def _write(self, art: IndexArtifact, k: VersionKeys, token: str, chunk_size: int, progress: bool, on_chunk) -> tuple[int, int]:
        table = art.table()
        first = table.order[table.starts[:-1]]
        g_codes, g_lengths, counts = art.codes[first], art.lengths[first], table.group_sizes
        ids = art.item_ids[table.order].astype(str).tolist()  # grouped by SID, most popular first
        num_sids, num_items = table.num_sids, len(ids)
        sids = format_sids(g_codes, g_lengths)
        files = {name: (art.path / name).read_bytes() for name in QUANTIZER_FILES}
        segments = range(0, num_sids, SEGMENT_SIDS)
        # Attributes and payloads in item-row order: the order of ``ids``, which the trie keeps.
        attributes = art.attributes.take(table.order) if art.attributes is not None else Attributes.empty(num_items)
        if art.fields:
            payload = art.payload()
            payloads = [json.dumps(payload[i], ensure_ascii=False) if payload[i] else "" for i in table.order.tolist()]
        else:
            payloads = [""] * num_items
        meta = {
            "version": k.version,
            "method": art.config.get("method", ""),
            "sizes": json.dumps(list(art.sizes)),
            "num_sids": num_sids,
            "num_items": num_items,
            "segments": len(segments),
            "dedup": int(bool(art.config.get("dedup"))),
            "fingerprint": art.fingerprint,
            "embedder": art.config.get("embedder", ""),
            "dim": art.config.get("dim", 0),
            "config": json.dumps(art.config),
            "source": str(art.path),
            "attributes": json.dumps([[a.name, a.kind] for a in attributes.specs]),
            "fields": json.dumps(list(art.fields)),
            "published": time.time(),
        }
        with self.r.pipeline(transaction=True) as p:  # registered and described before any data
            p.sadd(self.keys.versions, k.version).hset(k.meta, mapping=meta).pexpire(k.lease, LEASE_MS).execute()

        total = num_sids + num_items
        starts, group_sizes = table.starts.tolist(), counts.tolist()
        done = 0
        with tqdm(total=total, desc=f"publish {k.version}", unit="key", disable=not progress) as bar:
            for lo in range(0, num_sids, chunk_size):
                hi = min(lo + chunk_size, num_sids)
                a, b = starts[lo], starts[hi]
                groups = json.dumps([sids[lo:hi], group_sizes[lo:hi], ids[a:b], payloads[a:b]], ensure_ascii=False)
                first_row = str(a) if attributes.columns else ""
                try:
                    self._write_chunk(keys=[k.lease, k.sid, k.item, k.row, k.payload], args=[token, LEASE_MS, groups, first_row])
                except redis.ResponseError as e:
                    raise DataError(f"publish of {k.version} stopped: {e}") from e
                done += (hi - lo) + (b - a)
                bar.update((hi - lo) + (b - a))
                if on_chunk:
                    on_chunk(done, total)
        for n, lo in enumerate(segments):
            hi = min(lo + SEGMENT_SIDS, num_sids)
            seg = encode_segment(g_codes[lo:hi], g_lengths[lo:hi], counts[lo:hi], ids[starts[lo] : starts[hi]])
            with self.r.pipeline(transaction=False) as p:
                p.hset(k.snapshot, str(n), seg).pexpire(k.lease, LEASE_MS).execute()
        if attributes.columns:
            with self.r.pipeline(transaction=False) as p:
                p.hset(k.attrs, mapping={c.name: c.spec.kind for c in attributes.columns})
                for c in attributes.columns:
                    p.set(k.column(c.name), c.data.tobytes())
                    if c.values:
                        p.hset(k.codes(c.name), mapping={v: i for i, v in enumerate(c.values)})
                p.pexpire(k.lease, LEASE_MS).execute()
        self.r.hset(k.files, mapping=files)
        checks = [(k.sid, "h", num_sids), (k.item, "h", num_items), (k.snapshot, "h", len(segments)), (k.files, "h", len(files)),
                  (k.payload, "h", sum(map(bool, payloads)))]
        if attributes.columns:
            checks += [(k.row, "h", num_items), (k.attrs, "h", len(attributes.columns))]
            for c in attributes.columns:
                checks += [(k.column(c.name), "s", c.data.nbytes), (k.codes(c.name), "h", len(c.values))]
        args: list = [token, time.time()]
        for _, how, expected in checks:
            args += [how, expected]
        try:
            self._finalize(keys=[k.lease, k.meta, k.complete, *(key for key, _, _ in checks)], args=args)
        except redis.ResponseError as e:
            raise DataError(f"publish of {k.version} failed its final check: {e}") from e
        return num_sids, num_items

    # -- activate / list / gc -------------------------------------------------------------------
    def active(self) -> str | None:
        return _str(self.r.get(self.keys.active))

    def activate(self, version: str) -> str | None:
        """Make a complete index version the served one and announce it; returns the previous one.

        With a release active, the index must fit that release's decoder (the same quantizer
        fingerprint: the same version, a copy of it, or it extended by inserts), and the pair is
        activated as a release of its own; an index of another quantizer is refused
        (IncompatiblePair) because the served decoder would name the wrong items. Without any
        release (a Redis that never saw a decoder), only the index pointer moves.
        """
        current = self.active_release()
        if current is None:
            return self._flip(version, None)
        check_pair(version, self.meta(version)["fingerprint"], current.decoder_version, current.fingerprint)
        if version == current.index_version:
            return self._flip(version, current)
        release = self._record_release(version, current.decoder_version, None)
        return self._flip(version, release)

    def _flip(self, version: str, release: Release | None) -> str | None:
        """One transaction: the active index (and release) pointers, the history, the announcement."""
        k = self.keys.of(version)

        def flip(p: redis.client.Pipeline) -> str | None:
            if not p.exists(k.complete):
                state = "partial (still publishing, failed or interrupted)" if p.sismember(self.keys.versions, version) else "unknown"
                raise DataError(f"cannot activate {version}: version is {state}; see `sa2crq index versions`")
            previous = _str(p.get(self.keys.active))
            event = {"type": "activate", "version": version, "previous": previous}
            p.multi()
            p.set(self.keys.active, version)
            if release is not None:
                event.update(release=release.name, decoder=release.decoder_version)
                p.set(self.keys.active_release, release.name)
                p.lpush(self.keys.release_history, release.name).ltrim(self.keys.release_history, 0, 99)
            p.publish(self.keys.channel, json.dumps(event))
            return previous

        return self.r.transaction(flip, self.keys.active, k.complete, value_from_callable=True)

    # -- decoders and releases ----------------------------------------------------------------
    def publish_decoder(self, store: Store, version: str | None = None) -> str:
        """Write a store's decoder version (default: active, else newest) to Redis; returns its id."""
        v = store.open(store.resolve("decoder", version), kind="decoder")
        releases.write_decoder(self.r, self.keys, v)
        return v.id

    def decoder_info(self, version: str) -> releases.DecoderInfo:
        return releases.decoder_info(self.r, self.keys, version)

    def fetch_decoder(self, version: str, cache: Store) -> Version:
        """The decoder version from Redis, verified and installed in the local store ``cache``."""
        return releases.read_decoder(self.r, self.keys, version, cache)

    def publish_release(self, store: Store, index_version: str | None = None, decoder_version: str | None = None,
                        name: str | None = None, activate: bool = False, progress: bool = True) -> Release:
        """Publish a store's decoder (default: its active one) and the index it was trained for,
        pair them as a release, optionally activate it. Refuses a pair whose fingerprints differ."""
        decoder = store.open(store.resolve("decoder", decoder_version), kind="decoder")
        index = load_index(store, index_version or decoder.json("decoder.json")["index_version"])
        check_pair(index.version, index.fingerprint, decoder.id, decoder.json("decoder.json").get("index_fingerprint", ""))
        self.publish_artifact(index, progress=progress)
        releases.write_decoder(self.r, self.keys, decoder)
        release = self.create_release(index.version, decoder.id, name)
        if activate:
            self.activate_release(release.name)
        return release

    def create_release(self, index_version: str, decoder_version: str, name: str | None = None) -> Release:
        """Pair an index and a decoder already in Redis as a release (named, or a fresh name)."""
        return self._record_release(index_version, decoder_version, name)

    def _record_release(self, index_version: str, decoder_version: str, name: str | None) -> Release:
        self.require_complete(index_version)
        decoder = self.decoder_info(decoder_version)
        if not decoder.complete:
            raise DataError(f"decoder {decoder_version} is not complete in Redis")
        check_pair(index_version, self.meta(index_version)["fingerprint"], decoder_version, decoder.fingerprint)
        name = check_name(name) if name else f"release-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"
        existing = self.release(name, required=False)
        if existing is not None and (existing.index_version, existing.decoder_version) != (index_version, decoder_version):
            raise ConflictError(f"release {name} exists with index {existing.index_version} and decoder {existing.decoder_version}")
        release = existing or Release(name, index_version, decoder_version, decoder.fingerprint, time.time())
        self.r.hset(self.keys.releases, name, release.to_json())
        return release

    def release(self, name: str, required: bool = True) -> Release | None:
        raw = self.r.hget(self.keys.releases, name)
        if raw is None:
            if required:
                raise NotFoundError(f"no release {name!r} in Redis; see `sa2crq release list`")
            return None
        return Release.from_json(name, raw)

    def releases(self) -> list[Release]:
        """Every release, oldest first."""
        out = [Release.from_json(_str(n), v) for n, v in self.r.hgetall(self.keys.releases).items()]
        return sorted(out, key=lambda r: (r.created, r.name))

    def active_release(self) -> Release | None:
        name = _str(self.r.get(self.keys.active_release))
        return self.release(name, required=False) if name else None

    def activate_release(self, name: str) -> Release | None:
        """Make a release the served one (its index and decoder together); returns the previous release."""
        release = self.release(name)
        decoder = self.decoder_info(release.decoder_version)
        if not decoder.complete:
            raise DataError(f"release {name}: decoder {release.decoder_version} is not complete in Redis")
        check_pair(release.index_version, self.meta(release.index_version)["fingerprint"], release.decoder_version, decoder.fingerprint)
        previous = self.active_release()
        self._flip(release.index_version, release)
        return previous

    def previous_release(self) -> Release | None:
        """The release active before the current one (what ``rollback`` activates), if any."""
        history = [_str(n) for n in self.r.lrange(self.keys.release_history, 0, -1)]
        name = next((n for n in history[1:] if n != history[0]), None) if history else None
        return self.release(name, required=False) if name else None

    def rollback(self) -> Release:
        """Activate the release that was active before the current one; returns it."""
        previous = self.previous_release()
        if previous is None:
            raise NotFoundError("no earlier release to roll back to")
        self.activate_release(previous.name)
        return previous

    def heartbeat(self, replica_id: str, served: dict) -> None:
        releases.heartbeat(self.r, self.keys, check_name(replica_id, "replica id"), served)

    def live_replicas(self) -> dict[str, dict]:
        """Replica id -> what it last said it serves (release, index and decoder versions)."""
        return releases.live_replicas(self.r, self.keys)

    def versions(self) -> list[VersionInfo]:
        """Every version with keys in Redis, oldest first."""
        names = sorted(_str(v) for v in self.r.smembers(self.keys.versions))
        with self.r.pipeline(transaction=False) as p:
            for v in names:
                k = self.keys.of(v)
                p.hmget(k.meta, "method", "num_sids", "num_items", "published").exists(k.complete).exists(k.lease)
            replies = p.execute()
        active = self.active()
        out = []
        for i, v in enumerate(names):
            (method, sids, items, published), complete, leased = replies[3 * i : 3 * i + 3]
            state = "complete" if complete else "publishing" if leased else "partial"
            out.append(VersionInfo(
                version=v,
                state=state,
                active=v == active,
                method=_str(method),
                num_sids=int(sids) if sids is not None else None,
                num_items=int(items) if items is not None else None,
                published=float(published) if published is not None else None,
            ))  # fmt: skip
        return sorted(out, key=lambda i: (i.published or 0.0, i.version))

    def gc(self, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest complete versions, and every partial one not being
        published. Never deleted: the active version, the versions of the active release and of
        the ``keep`` releases before it (rollback targets), and every index or decoder a live
        replica says it serves (heartbeats). Releases that lost a part go, and so do decoders no
        release or replica uses. Returns what was removed."""
        if keep < 0:
            raise DataError("--keep must be >= 0")
        infos = self.versions()
        complete = [i.version for i in infos if i.state == "complete"]
        history = [_str(n) for n in self.r.lrange(self.keys.release_history, 0, keep)]
        pinned = [r for r in (self.release(n, required=False) for n in dict.fromkeys(history)) if r is not None]
        live = self.live_replicas().values()
        kept = set(complete[len(complete) - keep :] if keep else []) | {self.active()}
        kept |= {r.index_version for r in pinned} | {s.get("index_version") for s in live}
        removed = []
        for info in infos:
            if info.version in kept or info.state == "publishing":
                continue
            if self._drop(info.version):
                removed.append(info.version)
        gone = set(removed)
        for release in self.releases():
            if release.index_version in gone and release.name not in history:
                self.r.hdel(self.keys.releases, release.name)
                removed.append(release.name)
        used = {r.decoder_version for r in self.releases()} | {s.get("decoder_version") for s in live}
        for decoder in sorted(_str(d) for d in self.r.smembers(self.keys.decoders)):
            if decoder not in used:
                releases.drop_decoder(self.r, self.keys, decoder)
                removed.append(decoder)
        return removed

    def _drop(self, version: str) -> bool:
        k = self.keys.of(version)

        def unmark(p: redis.client.Pipeline) -> bool:
            if _str(p.get(self.keys.active)) == version:
                return False
            p.multi()
            p.delete(k.complete)  # from here on activate() refuses it
            return True

        if not self.r.transaction(unmark, self.keys.active, value_from_callable=True):
            return False
        self._unlink_namespace(k)
        self.r.srem(self.keys.versions, version)
        return True

    def _unlink_namespace(self, k: VersionKeys) -> None:
        batch = []
        for key in self.r.scan_iter(match=k.pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                self.r.unlink(*batch)
                batch.clear()
        if batch:
            self.r.unlink(*batch)

    # -- cold start ---------------------------------------------------------------------------
    def insert(self, version: str, pairs: list[tuple[str, SID]], payloads: list[dict] | None = None) -> InsertResult:
        """Append ``(item id, SID)`` pairs to a complete version in one atomic script, in order:
        each to the end of its SID's item list, or as a new SID. Nothing existing moves. New items
        take the next item rows, with every attribute missing (``set_attributes`` fills them). The
        batch is logged (``events_since``) and announced on the events channel. An id already in
        the version refuses the whole batch (ConflictError). ``payloads`` (per item: title,
        popularity, vector) are kept beside the version, so a later release can take the items
        over (``inserted_items``)."""
        keys = self.keys.of(version)
        specs = self.attribute_specs(version)
        texts = [(item, format_sid(sid)) for item, sid in pairs]
        payloads = payloads or [{} for _ in pairs]
        args = [version, self.keys.channel, json.dumps(texts), json.dumps([a.kind for a in specs])]
        for (item, sid), payload in zip(texts, payloads, strict=True):
            args += [item, sid, json.dumps(item), json.dumps(payload)]
        columns = [keys.column(a.name) for a in specs]
        try:
            reply = self._insert(keys=[keys.complete, keys.item, keys.sid, keys.meta, keys.log, keys.inserted, keys.row, *columns], args=args)
        except redis.ResponseError as e:
            raise UnavailableError(f"insert into {version} refused: {e}") from e
        if reply[0] == 0:
            raise ConflictError(f"item {reply[1].decode()!r} is already in index {version}")
        return InsertResult(version=version, items=tuple(pairs), new_sids=int(reply[2]), log_id=reply[1].decode())

    def inserted_items(self, version: str) -> dict[str, dict]:
        """Cold-start items of a version: item id -> the payload it was inserted with."""
        return {_str(a): json.loads(b) for a, b in self.r.hgetall(self.keys.of(version).inserted).items()}

    # -- attributes and payloads --------------------------------------------------------------
    def attribute_specs(self, version: str) -> tuple[AttributeSpec, ...]:
        """The attributes a version declares (none for versions published without them)."""
        raw = self.r.hget(self.keys.of(version).meta, "attributes")
        return tuple(AttributeSpec(name, kind) for name, kind in json.loads(raw or "[]"))

    def set_attributes(self, version: str | None, updates: list[tuple[str, dict]]) -> UpdateResult:
        """Set attribute values of items of a complete version (default: the active one), in place.

        ``updates``: (item id, {attribute: value or None to clear it}); each item once. Checked
        whole before anything is written: an unknown item (NotFoundError), an attribute the
        version does not declare or a value of the wrong kind (DataError) refuses the call. Then
        ``UPDATE_CHUNK`` items at a time, each chunk one atomic script that writes the columns, logs
        the change and announces it, so replicas follow as they follow inserts.
        """
        v = self.require_complete(version)
        specs = {a.name: a for a in self.attribute_specs(v)}
        if not specs:
            raise DataError(f"index version {v} has no attributes: declare them when building it (sa2crq index build --attributes)")
        ids = [item for item, _ in updates]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"item {dup!r} appears twice in one update")
        for item, values in updates:
            for name, value in values.items():
                if name not in specs:
                    raise DataError(f"item {item!r}: unknown attribute {name!r}; index {v} has: {', '.join(specs)}")
                try:
                    check_value(specs[name], value)
                except DataError as e:
                    raise DataError(f"item {item!r}: {e}") from None
        k = self.keys.of(v)
        rows: list[int | None] = []
        for lo in range(0, len(ids), UPDATE_CHUNK):
            rows += [None if r is None else int(r) for r in self.r.hmget(k.row, ids[lo : lo + UPDATE_CHUNK])]
        unknown = [i for i, r in zip(ids, rows) if r is None]
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise NotFoundError(f"{len(unknown)} item(s) not in index {v}: {shown}")
        log_id = ""
        for lo in range(0, len(updates), UPDATE_CHUNK):
            chunk = list(zip(rows[lo : lo + UPDATE_CHUNK], updates[lo : lo + UPDATE_CHUNK]))
            per_attribute: dict[str, tuple[list, list]] = {}
            for row, (_, values) in chunk:
                for name, value in values.items():
                    rs, vs = per_attribute.setdefault(name, ([], []))
                    rs.append(row)
                    vs.append(value)
            if not per_attribute:
                continue
            names = sorted(per_attribute)
            payload = json.dumps({"items": [i for _, (i, _) in chunk], "set": per_attribute})
            keys = [k.complete, k.log] + [key for n in names for key in (k.column(n), k.codes(n))]
            args = [v, self.keys.channel, payload] + [x for n in names for x in (n, specs[n].kind)]
            try:
                log_id = _str(self._set_attributes(keys=keys, args=args))
            except redis.ResponseError as e:
                raise UnavailableError(f"attribute update of {v} refused: {e}") from e
        return UpdateResult(v, len(updates), log_id)

    def payloads(self, version: str, item_ids: list[str], fields: list[str] | None = None) -> list[dict | None]:
        """Per item, its stored fields (only ``fields`` if given; None for an item the version
        stores none for)."""
        raw = self.r.hmget(self.keys.of(version).payload, item_ids) if item_ids else []
        out: list[dict | None] = []
        for r in raw:
            stored = None if r is None else json.loads(r)
            out.append(stored if stored is None or fields is None else {f: stored[f] for f in fields if f in stored})
        return out

    def existing(self, version: str, item_ids: list[str]) -> list[str]:
        """The ids among ``item_ids`` that ``version`` already holds."""
        return [i for i, s in zip(item_ids, self.r.hmget(self.keys.of(version).item, item_ids)) if s is not None]

    # -- read ---------------------------------------------------------------------------------
    def require_complete(self, version: str | None = None) -> str:
        """The given version, else the active one; DataError unless it is complete."""
        v = version or self.active()
        if v is None:
            raise DataError("no active index version in Redis: run `sa2crq index publish --activate` first")
        if not self.r.exists(self.keys.of(v).complete):
            raise DataError(f"index version {v} is not complete in Redis")
        return v

    def meta(self, version: str) -> dict:
        raw = {_str(a): _str(b) for a, b in self.r.hgetall(self.keys.of(version).meta).items()}
        if not raw:
            raise NotFoundError(f"unknown index version {version}")
        return {
            **raw,
            "fingerprint": raw.get("fingerprint", ""),
            "sizes": tuple(json.loads(raw["sizes"])),
            "config": json.loads(raw["config"]),
            **{f: int(raw.get(f) or 0) for f in ("num_sids", "num_items", "segments", "dedup", "dim")},
        }

    def _counts(self, version: str) -> tuple[int, int]:
        m = self.meta(version)
        return m["num_sids"], m["num_items"]

    def sids_of(self, item_ids: list[str], version: str | None = None) -> list[tuple[int, ...] | None]:
        v = self.require_complete(version)
        return [None if s is None else parse_sid(_str(s)) for s in self.r.hmget(self.keys.of(v).item, item_ids)]

    def items_of(self, sids: list[tuple[int, ...]], version: str | None = None) -> list[list[str]]:
        v = self.require_complete(version)
        raw = self.r.hmget(self.keys.of(v).sid, [format_sid(s) for s in sids])
        return [[] if r is None else json.loads(r) for r in raw]

    def quantizer_files(self, version: str) -> dict[str, bytes]:
        return {_str(a): b for a, b in self.r.hgetall(self.keys.of(version).files).items()}

    def events_since(self, version: str, after: str = "0-0", until: str = "+") -> tuple[list[LogEvent], str]:
        """The version's log entries after stream id ``after`` (up to ``until``), in order, and the
        last id seen: cold-start inserts and attribute updates."""
        events: list[LogEvent] = []
        last = after
        for entry_id, fields in self.r.xrange(self.keys.of(version).log, min=f"({after}", max=until):
            last = _str(entry_id)
            if b"items" in fields:
                events.append(Inserted(tuple((item, parse_sid(sid)) for item, sid in json.loads(fields[b"items"]))))
            elif b"attributes" in fields:
                update = json.loads(fields[b"attributes"])
                codes = json.loads(fields[b"codes"]) or {}
                events.append(AttributesSet(
                    {name: (np.asarray(rows, dtype=np.int64), values) for name, (rows, values) in update["set"].items()},
                    {name: [(value, int(code)) for value, code in pairs] for name, pairs in codes.items()},
                ))  # fmt: skip
        return events, last

    def log_since(self, version: str, after: str = "0-0") -> tuple[list[tuple[str, tuple[int, ...]]], str]:
        """Cold-start inserts logged after stream id ``after``, in order, and the last id seen."""
        events, last = self.events_since(version, after)
        return [pair for e in events if isinstance(e, Inserted) for pair in e.items], last

    def load_snapshot(self, version: str | None = None) -> tuple[IndexSnapshot, str]:
        """A complete version (default: active) as one consistent snapshot: the trie (published
        SIDs plus the logged inserts), the attribute columns and the payload field names.

        The columns and the log's last id are read in one transaction, and the trie takes the
        inserts up to that id, so all describe one moment. Returns the id to resume the log from.
        """
        v = self.require_complete(version)
        m = self.meta(v)
        k = self.keys.of(v)
        specs = self.attribute_specs(v)
        with self.r.pipeline(transaction=True) as p:
            for a in specs:
                p.get(k.column(a.name)).hgetall(k.codes(a.name))
            p.xrevrange(k.log, count=1)
            replies = p.execute()
        last = _str(replies[-1][0][0]) if replies[-1] else "0-0"
        columns = []
        for i, a in enumerate(specs):
            data, codes = replies[2 * i], replies[2 * i + 1]
            values = [None] * len(codes)
            for value, code in codes.items():
                values[int(code)] = _str(value)
            columns.append(Column(a, np.frombuffer(data or b"", dtype=a.dtype).copy(), tuple(values)))

        parts = {"codes": [], "lengths": [], "counts": [], "id_lengths": [], "id_bytes": []}
        for n in range(m["segments"]):
            with np.load(io.BytesIO(self.r.hget(k.snapshot, str(n))), allow_pickle=False) as z:
                for name in parts:
                    parts[name].append(z[name])
        arrays = {name: np.concatenate(a) for name, a in parts.items()}
        offsets = np.concatenate([[0], np.cumsum(arrays["id_lengths"], dtype=np.int64)])
        trie = Trie.from_groups(m["sizes"], arrays["codes"], arrays["lengths"], arrays["counts"], offsets, arrays["id_bytes"], v)
        events, _ = self.events_since(v, until=last)
        trie = trie.insert([pair for e in events if isinstance(e, Inserted) for pair in e.items])
        attributes = Attributes(tuple(columns), trie.num_items) if columns else Attributes.empty(trie.num_items)
        fields = tuple(json.loads(m.get("fields") or "[]"))
        return IndexSnapshot(trie, attributes, fields), last

    def load_trie(self, version: str | None = None) -> tuple[Trie, str]:
        """The trie of a complete version (default: active): its snapshot plus its insert log.

        Returns the trie and the id of the last log entry applied, to resume from.
        """
        snap, last = self.load_snapshot(version)
        return snap.trie, last
