"""Cold start: new items join the active index version with its frozen quantizer.

Nothing is retrained and nobody is renumbered: a new item gets the SID the version's own codebooks
and SARQ priors give it (as a tail item). This module only encodes new items into (item, SID)
pairs; ``RedisIndex.insert`` appends them atomically, logs and announces them. A later version
built from a catalog that includes these items supersedes them.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from indexer.data.catalog import Catalog, check_vectors
from indexer.quantizers import Quantizer, load_quantizer
from sidcore.embed import embed_texts
from sidcore.errors import ConflictError, DataError
from sidcore.index.artifact import QUANTIZER_FILES
from sidcore.index.redis_index import InsertResult, RedisIndex


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
    clash = index.existing(version, catalog.item_ids)
    if clash:
        raise ConflictError(f"{len(clash)} item id(s) already in index {version}, e.g. {', '.join(map(repr, clash[:3]))}")

    q = frozen_quantizer(index, version)
    x = np.ascontiguousarray(x, dtype=np.float32)
    codes = q.encode(x, head=np.zeros(len(x), dtype=bool))
    lengths = q.lengths(codes)
    order = np.argsort(-np.asarray(catalog.popularity, dtype=np.float64), kind="stable")
    return index.insert(version, [(catalog.item_ids[i], tuple(int(c) for c in codes[i, : lengths[i]])) for i in order])
