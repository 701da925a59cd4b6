"""Releases: the (index version, decoder version) pairs replicas serve, and the decoders in Redis.

A decoder generates the SIDs of the index it was trained on, so replicas never serve an index with
a decoder trained for another quantizer: a *release* names a pair whose fingerprints agree
(``artifact.check_pair``), activation flips to a release, and every replica loads the release's
decoder and index together and swaps both at once. Decoders travel through Redis, so replicas need
no shared volume: a decoder version's files are written back to back in ``DECODER_CHUNK`` pieces,
described by its store manifest (sha256 per file); a replica reassembles them into a local store
(``model_store.Store.install``), which verifies every checksum before the version exists there.
``RedisIndex`` is the API; this module holds the records and the decoder transport it uses.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from model_store import Manifest, Store, StoreError, Version
from sidcore.errors import DataError, NotFoundError
from sidcore.index.keys import DecoderKeys, Keys

DECODER_CHUNK = 8 << 20
"""Bytes per stored piece of a decoder: far below Redis's value limit, and a bounded buffer on both ends."""
HEARTBEAT_TTL_S = 30
"""A replica's heartbeat expires this long after its last renewal (replicas renew every third of it)."""


@dataclass(frozen=True)
class Release:
    name: str
    index_version: str
    decoder_version: str
    fingerprint: str  # the quantizer fingerprint both sides share
    created: float

    def to_json(self) -> str:
        return json.dumps({"index": self.index_version, "decoder": self.decoder_version, "fingerprint": self.fingerprint,
                           "created": self.created})

    @classmethod
    def from_json(cls, name: str, raw: bytes | str) -> "Release":
        d = json.loads(raw)
        return cls(name, d["index"], d["decoder"], d["fingerprint"], float(d["created"]))


@dataclass(frozen=True)
class DecoderInfo:
    version: str
    index_version: str
    fingerprint: str
    sizes: tuple[int, ...]
    bytes: int
    complete: bool


def write_decoder(r: redis.Redis, keys: Keys, version: Version) -> bool:
    """Write a verified store decoder version into Redis; False if it was complete there already."""
    k = keys.decoder(version.id)
    if r.exists(k.complete):
        return False
    spec = version.json("decoder.json")
    names = sorted(version.manifest.files)
    sizes = {name: (version.path / name).stat().st_size for name in names}
    r.delete(k.meta, k.chunk, k.complete)  # leftovers of an interrupted publish
    n = 0
    buf = bytearray()
    for name in names:
        with open(version.path / name, "rb") as f:
            while piece := f.read(DECODER_CHUNK - len(buf)):
                buf += piece
                if len(buf) == DECODER_CHUNK:
                    r.hset(k.chunk, str(n), bytes(buf))
                    n, buf = n + 1, bytearray()
    if buf:
        r.hset(k.chunk, str(n), bytes(buf))
        n += 1
    meta = {
        "manifest": version.manifest.model_dump_json(),
        "file_sizes": json.dumps(sizes),
        "chunks": n,
        "bytes": sum(sizes.values()),
        "index_version": spec["index_version"],
        "fingerprint": spec.get("index_fingerprint", ""),
        "sizes": json.dumps(spec["sizes"]),
        "published": time.time(),
    }
    with r.pipeline(transaction=True) as p:
        p.sadd(keys.decoders, version.id).hset(k.meta, mapping=meta).execute()
    if r.hlen(k.chunk) != n:
        raise DataError(f"publish of decoder {version.id} stopped: {r.hlen(k.chunk)} of {n} chunks in Redis")
    r.set(k.complete, time.time())
    return True


def decoder_info(r: redis.Redis, keys: Keys, version: str) -> DecoderInfo:
    k = keys.decoder(version)
    raw = r.hmget(k.meta, "index_version", "fingerprint", "sizes", "bytes")
    if raw[0] is None:
        raise NotFoundError(f"decoder {version} is not in Redis: publish it with `sa2crq release publish`")
    return DecoderInfo(version, raw[0].decode(), raw[1].decode(), tuple(json.loads(raw[2])), int(raw[3]), bool(r.exists(k.complete)))


def read_decoder(r: redis.Redis, keys: Keys, version: str, cache: Store) -> Version:
    """The decoder version from Redis, installed in (or found in) the local ``cache`` store.

    Streams chunk by chunk into the files; ``Store.install`` checks every sha256, so a corrupt or
    truncated copy raises StoreError and installs nothing.
    """
    k: DecoderKeys = keys.decoder(version)
    if not r.exists(k.complete):
        raise NotFoundError(f"decoder {version} is not complete in Redis")
    raw_manifest, raw_sizes, raw_chunks = r.hmget(k.meta, "manifest", "file_sizes", "chunks")
    manifest = Manifest.model_validate_json(raw_manifest)
    sizes: dict[str, int] = json.loads(raw_sizes)
    chunks = int(raw_chunks)

    def write(staging: Path) -> None:
        names = sorted(manifest.files)
        at, left, out = 0, None, None
        try:
            for n in range(chunks):
                data = r.hget(k.chunk, str(n))
                if data is None:
                    raise StoreError(f"decoder {version} is missing chunk {n} in Redis")
                view = memoryview(data)
                while len(view):
                    if out is None or left == 0:
                        if out is not None:
                            out.close()
                        if at == len(names):
                            raise StoreError(f"decoder {version} has more bytes in Redis than its manifest lists")
                        path = staging / names[at]
                        path.parent.mkdir(parents=True, exist_ok=True)
                        out, left = open(path, "wb"), sizes[names[at]]
                        at += 1
                        if left == 0:
                            continue
                    take = min(left, len(view))
                    out.write(view[:take])
                    view, left = view[take:], left - take
            while at < len(names):  # trailing empty files
                (staging / names[at]).parent.mkdir(parents=True, exist_ok=True)
                (staging / names[at]).touch()
                at += 1
        finally:
            if out is not None:
                out.close()

    return cache.install(manifest, write)


def drop_decoder(r: redis.Redis, keys: Keys, version: str) -> None:
    k = keys.decoder(version)
    r.delete(k.complete, k.meta, k.chunk)
    r.srem(keys.decoders, version)


def heartbeat(r: redis.Redis, keys: Keys, replica_id: str, served: dict) -> None:
    """Say what this replica serves (``served``: release, index_version, decoder_version, ...)."""
    r.set(keys.replica(replica_id), json.dumps({**served, "at": time.time()}), ex=HEARTBEAT_TTL_S)


def live_replicas(r: redis.Redis, keys: Keys) -> dict[str, dict]:
    """Replica id -> its last heartbeat, for replicas heard from within ``HEARTBEAT_TTL_S``."""
    names = list(r.scan_iter(match=keys.replica_pattern, count=1000))
    values = r.mget(names) if names else []
    prefix = len(keys.replica(""))
    return {n.decode()[prefix:]: json.loads(v) for n, v in zip(names, values) if v is not None}
