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
from sidcore.errors import ConflictError, DataError, NotFoundError
from sidcore.index.artifact import QUANTIZER_FILES
from sidcore.index.redis_index import InsertResult, RedisIndex
from sidcore.index.releases import Release


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
    version: str | None = None,
) -> InsertResult:
    """Encode new items with a version's quantizer (default: the active version) and insert them.

    Vectors come from ``vectors``, else ``catalog.vectors``, else MiniLM over the item texts (only
    for versions built from text). Within the batch, more popular items are appended first. Each
    item's title, popularity and given vector are kept with the version, so the next release can
    take the item over (``carry_over``).
    """
    version = index.require_complete(version)
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
    collab_dim = (meta["config"].get("collab") or {}).get("dim", 0)
    if collab_dim and x.shape[1] == meta["dim"] - collab_dim:
        # A new item has no history yet: its collaborative part is zero, its SID comes from its text.
        x = np.concatenate([x, np.zeros((len(x), collab_dim), dtype=np.float32)], 1)
    if x.shape[1] != meta["dim"]:
        raise DataError(f"new items have {x.shape[1]}-dimensional vectors but index {version} expects {meta['dim'] - collab_dim}")
    clash = index.existing(version, catalog.item_ids)
    if clash:
        raise ConflictError(f"{len(clash)} item id(s) already in index {version}, e.g. {', '.join(map(repr, clash[:3]))}")

    q = frozen_quantizer(index, version)
    x = np.ascontiguousarray(x, dtype=np.float32)
    codes = q.encode(x, head=np.zeros(len(x), dtype=bool))
    lengths = q.lengths(codes)
    order = np.argsort(-np.asarray(catalog.popularity, dtype=np.float64), kind="stable")
    given = vectors if vectors is not None else catalog.vectors
    payloads = [{"title": catalog.texts[i], "popularity": float(catalog.popularity[i]),
                 **({"vector": given[i].astype(float).tolist()} if given is not None else {})} for i in order]
    return index.insert(version, [(catalog.item_ids[i], tuple(int(c) for c in codes[i, : lengths[i]])) for i in order], payloads)


def inserted_catalog(index: RedisIndex, version: str, skip: set[str] = frozenset()) -> tuple[Catalog, np.ndarray | None] | None:
    """The cold-start items of ``version`` (minus ``skip``) as a catalog, with their vectors if they
    were inserted with vectors; None when there are none."""
    items = {i: p for i, p in index.inserted_items(version).items() if i not in skip}
    if not items:
        return None
    ids = sorted(items, key=lambda i: -items[i].get("popularity", 0.0))
    catalog = Catalog(ids, [items[i].get("title", "") for i in ids], np.array([items[i].get("popularity", 0.0) for i in ids]))
    with_vectors = [i for i in ids if "vector" in items[i]]
    if with_vectors and len(with_vectors) != len(ids):
        raise DataError(f"index {version}: some cold-start items have vectors and some do not; export them and rebuild")
    vectors = np.array([items[i]["vector"] for i in ids], dtype=np.float32) if with_vectors else None
    return catalog, vectors


def carry_over(index: RedisIndex, from_version: str, to_version: str, progress: bool = False) -> InsertResult | None:
    """Insert into ``to_version`` the cold-start items of ``from_version`` it lacks, encoded with
    ``to_version``'s own quantizer, so that activating a new release loses no inserted item."""
    if from_version == to_version:
        return None
    pending = index.inserted_items(from_version)
    already = set(index.existing(to_version, list(pending))) if pending else set()
    found = inserted_catalog(index, from_version, skip=already)
    if found is None:
        return None
    catalog, vectors = found
    return add_items(index, catalog, vectors, progress=progress, version=to_version)


def activate_release(index: RedisIndex, name: str, progress: bool = False) -> tuple[Release | None, int]:
    """Activate a release, taking over the cold-start items the served index has and the release's
    index lacks (encoded with the new quantizer): a rebuilt catalog loses no inserted item.

    The carry-over runs before the flip, and once more after it for items inserted in between
    (inserts go to the active index). Returns the previous release and how many items came over.
    """
    target = index.release(name)
    source = index.active()
    carried = 0
    if source is not None and (found := carry_over(index, source, target.index_version, progress)) is not None:
        carried += len(found.items)
    previous = index.activate_release(name)
    if source is not None and (found := carry_over(index, source, target.index_version, progress)) is not None:
        carried += len(found.items)
    return previous, carried


def rollback_release(index: RedisIndex, progress: bool = False) -> tuple[Release, int]:
    """``RedisIndex.rollback`` with the same carry-over of cold-start items as ``activate_release``."""
    previous = index.previous_release()
    if previous is None:
        raise NotFoundError("no earlier release to roll back to")
    _, carried = activate_release(index, previous.name, progress)
    return previous, carried
