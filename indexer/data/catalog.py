"""The catalog every indexer stage consumes, and loaders for the on-disk layouts we accept.

Layouts (see ../shared/data/README.md for the public ones):
- items JSONL: ``item_id`` (or BEIR's ``_id``), ``title`` and/or ``text``, optional ``popularity``,
  and any other fields: declared attributes (filters) and payload fields (returned with answers);
- interactions JSONL: ``{"user_id", "item_ids": [oldest, ..., newest]}``;
- BEIR qrels TSV: ``query-id  corpus-id  score`` with a header line.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sidcore.errors import DataError
from sidcore.index.attributes import Attributes


@dataclass(frozen=True)
class Catalog:
    """Items in a fixed order; every per-item array is aligned with ``item_ids``.

    ``popularity`` counts interactions (or is given); ``vectors`` are optional precomputed
    embeddings that replace text embedding; ``attributes`` are what requests can filter on;
    ``payload`` holds per item the stored fields an answer can return (title, url, ...);
    ``titles`` each item's title alone ("" where it has none), for the views a decoder learns from.
    """

    item_ids: list[str]
    texts: list[str]
    popularity: np.ndarray
    vectors: np.ndarray | None = None
    attributes: Attributes | None = None
    payload: tuple[dict, ...] | None = None
    titles: tuple[str, ...] | None = None
    index_of: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if n == 0:
            raise DataError("the catalog is empty")
        if len(self.texts) != n or len(self.popularity) != n:
            raise DataError("item_ids, texts and popularity must have one entry per item")
        index_of = {item: i for i, item in enumerate(self.item_ids)}
        if len(index_of) != n:
            dup = next(item for item, c in Counter(self.item_ids).items() if c > 1)
            raise DataError(f"duplicate item_id {dup!r}")
        if np.any(np.asarray(self.popularity) < 0):
            raise DataError("popularity must be non-negative")
        if self.vectors is not None:
            check_vectors(self.vectors, n)
        if self.attributes is not None and self.attributes.num_rows != n:
            raise DataError(f"attributes cover {self.attributes.num_rows} items, the catalog has {n}")
        if self.payload is not None and len(self.payload) != n:
            raise DataError(f"payload has {len(self.payload)} entries, the catalog {n} items")
        if self.titles is not None and len(self.titles) != n:
            raise DataError(f"titles has {len(self.titles)} entries, the catalog {n} items")
        object.__setattr__(self, "index_of", index_of)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def fields(self) -> tuple[str, ...]:
        """Payload field names, in order of first appearance."""
        return tuple(dict.fromkeys(k for p in self.payload or () for k in p))

    def with_popularity(self, popularity: np.ndarray) -> "Catalog":
        return dataclasses.replace(self, popularity=np.asarray(popularity))

    def with_vectors(self, vectors: np.ndarray) -> "Catalog":
        return dataclasses.replace(self, vectors=vectors)


def check_vectors(vectors: np.ndarray, n: int) -> None:
    if vectors.ndim != 2:
        raise DataError(f"vectors must be a 2-D array (items x dim), got shape {vectors.shape}")
    if vectors.shape[0] != n:
        raise DataError(f"vectors have {vectors.shape[0]} rows but the catalog has {n} items")
    if not np.issubdtype(vectors.dtype, np.floating):
        raise DataError(f"vectors must be floating point, got {vectors.dtype}")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise DataError(f"vectors contain NaN or inf in {int(bad.sum())} rows (first: row {int(np.argmax(bad))})")


def read_jsonl(path: Path):
    """(line number, object) per non-blank line; DataError naming the line otherwise."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, row


def load_items(path: str | Path, attributes: Sequence[tuple[str, str | None]] = (), fields: Sequence[str] = ()) -> Catalog:
    """Load an items JSONL. Text is ``title. text`` when both are present.

    ``attributes``: (name, kind or None to infer it) of the fields to keep as item attributes
    (``sidcore.index.attributes``); ``fields``: the fields to keep as payload (an item lacking one
    simply has none).
    """
    path = Path(path)
    ids, texts, titles, pops = [], [], [], []
    attribute_rows: list[dict] = []
    payload: list[dict] = []
    any_pop = False
    reserved = {"item_id", "_id", "popularity"}
    clash = reserved & ({n for n, _ in attributes} | set(fields))
    if clash:
        raise DataError(f"{', '.join(sorted(clash))} cannot be an attribute or a payload field")
    for lineno, row in read_jsonl(path):
        item_id = row.get("item_id", row.get("_id"))
        if item_id is None or isinstance(item_id, (dict, list, bool)):
            raise DataError(f"{path}:{lineno}: missing field 'item_id' (or '_id')")
        parts = [str(row[k]).strip() for k in ("title", "text") if row.get(k)]
        if not parts:
            raise DataError(f"{path}:{lineno}: item {item_id!r} has neither 'title' nor 'text'")
        pop = row.get("popularity")
        if pop is not None:
            if not isinstance(pop, (int, float)) or isinstance(pop, bool) or pop < 0:
                raise DataError(f"{path}:{lineno}: 'popularity' must be a non-negative number")
            any_pop = True
        ids.append(str(item_id))
        texts.append(". ".join(parts))
        titles.append(str(row.get("title") or "").strip())
        pops.append(pop or 0)
        if attributes:
            attribute_rows.append({name: row.get(name) for name, _ in attributes})
        if fields:
            payload.append({f: row[f] for f in fields if row.get(f) is not None})
    if not ids:
        raise DataError(f"{path}: the catalog is empty")
    try:
        attrs = Attributes.from_values(attributes, attribute_rows) if attributes else None
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    catalog = Catalog(ids, texts, np.asarray(pops, dtype=np.float64), attributes=attrs, payload=tuple(payload) if fields else None,
                      titles=tuple(titles))
    if not any_pop:
        catalog = catalog.with_popularity(np.zeros(len(ids)))
    return catalog


def load_attribute_updates(path: str | Path) -> list[tuple[str, dict]]:
    """Attribute updates JSONL: per line ``item_id`` (or ``_id``) and the attributes to set (null
    clears one), e.g. ``{"item_id": "1042", "available": false, "price": 17.5}``."""
    path = Path(path)
    out = []
    for lineno, row in read_jsonl(path):
        item_id = row.pop("item_id", row.pop("_id", None))
        if item_id is None or isinstance(item_id, (dict, list, bool)):
            raise DataError(f"{path}:{lineno}: missing field 'item_id' (or '_id')")
        if not row:
            raise DataError(f"{path}:{lineno}: no attribute to set for item {item_id!r}")
        out.append((str(item_id), row))
    if not out:
        raise DataError(f"{path}: no updates")
    return out


def load_sequences(path: str | Path) -> list[list[str]]:
    """Interaction histories, oldest first, item ids as strings."""
    path = Path(path)
    out = []
    for lineno, row in read_jsonl(path):
        items = row.get("item_ids")
        if not isinstance(items, list):
            raise DataError(f"{path}:{lineno}: missing list field 'item_ids'")
        out.append([str(i) for i in items])
    return out


def load_qrels(path: str | Path) -> list[tuple[str, str, float]]:
    """BEIR qrels TSV rows (query-id, corpus-id, score); the header line is optional."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if not line.strip() or (lineno == 1 and cols[0] == "query-id"):
                continue
            if len(cols) != 3:
                raise DataError(f"{path}:{lineno}: expected 3 tab-separated columns")
            try:
                rows.append((cols[0], cols[1], float(cols[2])))
            except ValueError:
                raise DataError(f"{path}:{lineno}: score {cols[2]!r} is not a number") from None
    return rows


def count_popularity(catalog: Catalog, interactions: str | Path, holdout_last: int = 0) -> np.ndarray:
    """Interaction counts per catalog item from a sequences JSONL or a qrels TSV.

    ``holdout_last`` drops that many final items of each sequence, so popularity (and hence the
    head/tail split) is computed on training interactions only.
    """
    interactions = Path(interactions)
    if interactions.suffix == ".tsv":
        ids = [doc for _, doc, score in load_qrels(interactions) if score > 0]
    else:
        seqs = load_sequences(interactions)
        ids = [i for s in seqs for i in (s[: len(s) - holdout_last] if holdout_last else s)]
    return count_items(catalog, ids, interactions)


def count_items(catalog: Catalog, ids: list[str], source: str | Path) -> np.ndarray:
    """How often each catalog item occurs in ``ids`` (ids outside the catalog are skipped; a
    ``source`` none of whose ids are in it is an error naming it)."""
    counts = np.zeros(len(catalog), dtype=np.float64)
    known = [catalog.index_of[i] for i in ids if i in catalog.index_of]
    if ids and not known:
        raise DataError(f"{source}: none of its item ids are in the catalog")
    np.add.at(counts, np.asarray(known, dtype=np.int64), 1.0)
    return counts


def load_vectors(path: str | Path, n: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        vectors = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: not a .npy array ({e})") from None
    check_vectors(vectors, n)
    return vectors.astype(np.float32, copy=False)
