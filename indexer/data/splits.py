"""Held-out splits for data sets whose test cases live elsewhere: a BEIR folder's training queries
split by query, and history folders shifted one item back so that their test cases are the
validation items (settings are chosen there, never on the test cases)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from indexer.data.catalog import load_qrels, read_jsonl
from model_store import atomic_write
from sidcore.errors import DataError


def _link(src: Path, dst: Path, *names: str) -> None:
    """Files of ``src`` that a derived folder shares unchanged, linked into ``dst``."""
    for name in names:
        if not (dst / name).exists():
            (dst / name).symlink_to((src / name).resolve())


def split_queries(src: Path, dst: Path, heldout: float, seed: int) -> Path:
    """A BEIR folder ``dst`` whose ``qrels/train.tsv`` and ``qrels/test.tsv`` split ``src``'s training
    queries by query (a seeded ``heldout`` share in test); corpus and queries are linked, not copied."""
    src, dst = Path(src), Path(dst)
    if not (src / "qrels" / "train.tsv").is_file() or not (src / "corpus.jsonl").is_file() or not (src / "queries.jsonl").is_file():
        raise DataError(f"{src}: expected a BEIR folder with corpus.jsonl, queries.jsonl and qrels/train.tsv")
    if not 0 < heldout < 1:
        raise DataError(f"heldout must be in (0, 1), got {heldout}")
    rows = load_qrels(src / "qrels" / "train.tsv")
    queries = sorted({q for q, _, _ in rows})
    test = set(np.random.default_rng(seed).permutation(queries)[: round(heldout * len(queries))].tolist())
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    _link(src, dst, "corpus.jsonl", "queries.jsonl")
    for name, keep in (("train", lambda q: q not in test), ("test", lambda q: q in test)):
        with open(dst / "qrels" / f"{name}.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q}\t{d}\t{int(s)}\n" for q, d, s in rows if keep(q))
    return dst


def drop_last(src: Path, dst: Path) -> Path:
    """A history folder ``dst`` whose every sequence ends one item earlier than ``src``'s: its
    leave-one-out test cases are ``src``'s validation items, its validation items the ones before.
    A setting that changes what counts as validation (``--train-valid``) is compared on it;
    ``items.jsonl`` is linked, not copied."""
    src, dst = Path(src), Path(dst)
    if not (src / "sequences.jsonl").is_file() or not (src / "items.jsonl").is_file():
        raise DataError(f"{src}: expected a history folder with items.jsonl and sequences.jsonl")
    rows = []
    for lineno, row in read_jsonl(src / "sequences.jsonl"):
        if not isinstance(row.get("item_ids"), list):
            raise DataError(f"{src / 'sequences.jsonl'} line {lineno}: no item_ids list")
        rows.append(json.dumps({**row, "item_ids": row["item_ids"][:-1]}) + "\n")
    dst.mkdir(parents=True, exist_ok=True)  # only once every row is read: a bad source leaves no half folder
    _link(src, dst, "items.jsonl")
    atomic_write(dst / "sequences.jsonl", "".join(rows))
    return dst
