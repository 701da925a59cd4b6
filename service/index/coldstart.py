"""Cold start: new items join the active index version with its frozen quantizer.

Nothing is retrained and nobody is renumbered: a new item gets the SID the version's own codebooks
and SARQ priors give it (as a tail item), and goes to the end of that SID's item list, or makes a
new SID. One Lua script applies a whole batch atomically (it refuses the batch if any id exists),
appends it to the version's insert log and announces it, so subscribers can replay exactly what
they missed. A later version built from a catalog that includes these items supersedes them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from indexer.data.catalog import Catalog, DataError, check_vectors
from indexer.embed import embed_texts
from indexer.quantizers import Quantizer, load_quantizer
from indexer.sids import format_sid, parse_sid
from service.index.redis_index import QUANTIZER_FILES, RedisIndex

_INSERT = """
-- KEYS: complete item sid meta log; ARGV: version channel items_json, then (item, sid, item_json)...
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('SA2CRQ version ' .. ARGV[1] .. ' is not complete')
end
for i = 4, #ARGV, 3 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then return {0, ARGV[i]} end
end
local new_sids = 0
for i = 4, #ARGV, 3 do
  local item, sid, encoded = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('HSET', KEYS[2], item, sid)
  local list = redis.call('HGET', KEYS[3], sid)
  if list then
    redis.call('HSET', KEYS[3], sid, string.sub(list, 1, -2) .. ',' .. encoded .. ']')
  else
    redis.call('HSET', KEYS[3], sid, '[' .. encoded .. ']')
    new_sids = new_sids + 1
  end
end
redis.call('HINCRBY', KEYS[4], 'num_items', (#ARGV - 3) / 3)
redis.call('HINCRBY', KEYS[4], 'num_sids', new_sids)
local id = redis.call('XADD', KEYS[5], '*', 'items', ARGV[3])
redis.call('PUBLISH', ARGV[2], cjson.encode({type = 'insert', version = ARGV[1], id = id, items = cjson.decode(ARGV[3])}))
return {1, id, new_sids}
"""


@dataclass(frozen=True)
class InsertResult:
    version: str
    items: tuple[tuple[str, tuple[int, ...]], ...]  # (item id, SID) in the order they were appended
    new_sids: int
    log_id: str


@lru_cache(maxsize=4)
def _quantizer_from_bytes(meta: bytes, tensors: bytes) -> Quantizer:
    # Keyed by content, so a cached quantizer can never be stale; versions are immutable anyway.
    with tempfile.TemporaryDirectory(prefix="sa2crq-quantizer-") as d:
        (Path(d) / "quantizer.json").write_bytes(meta)
        (Path(d) / "quantizer.safetensors").write_bytes(tensors)
        return load_quantizer(Path(d))


def frozen_quantizer(index: RedisIndex, version: str) -> Quantizer:
    """The quantizer a version was built with, from Redis alone."""
    files = index.quantizer_files(version)
    missing = [f for f in QUANTIZER_FILES if f not in files]
    if missing:
        raise DataError(f"index version {version} has no {', '.join(missing)} in Redis")
    return _quantizer_from_bytes(*(files[f] for f in QUANTIZER_FILES))


def add_items(
    index: RedisIndex,
    catalog: Catalog,
    vectors: np.ndarray | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> InsertResult:
    """Encode new items with the active version's quantizer and insert them into that version.

    Vectors come from ``vectors``, else ``catalog.vectors``, else MiniLM over the item texts (only
    for versions built from text). Within the batch, more popular items are appended first.
    """
    version = index.require_complete()
    meta = index.meta(version)
    if meta["dedup"]:
        raise DataError(f"index {version} uses the --dedup collision suffix, which cold-start items cannot extend; rebuild instead")
    x = vectors if vectors is not None else catalog.vectors
    if x is not None:
        check_vectors(x, len(catalog))
    elif meta["embedder"] == "vectors":
        raise DataError(f"index {version} was built from precomputed vectors: pass --vectors with one row per new item")
    else:
        x = embed_texts(catalog.texts, cache_dir=cache_dir, progress=progress)
    if x.shape[1] != meta["dim"]:
        raise DataError(f"new items have {x.shape[1]}-dimensional vectors but index {version} expects {meta['dim']}")
    keys = index.keys.of(version)
    clash = [i for i, s in zip(catalog.item_ids, index.r.hmget(keys.item, catalog.item_ids)) if s is not None]
    if clash:
        raise DataError(f"{len(clash)} item id(s) already in index {version}, e.g. {', '.join(map(repr, clash[:3]))}")

    q = frozen_quantizer(index, version)
    x = np.ascontiguousarray(x, dtype=np.float32)
    codes = q.encode(x, head=np.zeros(len(x), dtype=bool))
    lengths = q.lengths(codes)
    order = np.argsort(-np.asarray(catalog.popularity, dtype=np.float64), kind="stable")
    pairs = [(catalog.item_ids[i], format_sid(codes[i, : lengths[i]])) for i in order]
    args = [version, index.keys.channel, json.dumps(pairs)]
    for item, sid in pairs:
        args += [item, sid, json.dumps(item)]
    reply = index.r.register_script(_INSERT)(keys=[keys.complete, keys.item, keys.sid, keys.meta, keys.log], args=args)
    if reply[0] == 0:
        raise DataError(f"item {reply[1].decode()!r} is already in index {version}")
    return InsertResult(
        version=version,
        items=tuple((item, parse_sid(sid)) for item, sid in pairs),
        new_sids=int(reply[2]),
        log_id=reply[1].decode(),
    )
