"""Decoder training examples from a data folder: histories, queries, and item indexing.

Folder layouts (as in ../shared/data):
- ``items.jsonl`` + ``sequences.jsonl``: leave-one-out on histories: train on windows of
  ``item_ids[:-2]``, validate on ``item_ids[-2]``, test on ``item_ids[-1]``;
- ``corpus.jsonl`` + ``queries.jsonl`` + ``qrels/train.tsv`` (BEIR): query text -> document.
Item indexing examples (item text -> its SID) teach the decoder every item, tail and cold-start
ones included, whatever the interactions say.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from indexer.data.catalog import Catalog, load_items, load_qrels, load_sequences
from sidcore.errors import DataError


@dataclass(frozen=True)
class Example:
    query: str | None
    history: tuple[str, ...]  # item ids, oldest first
    target: str  # item id


@dataclass(frozen=True)
class TrainingData:
    catalog: Catalog
    train: list[Example]  # histories and queries
    valid: list[Example]
    test: list[Example]


def items_file(data_dir: Path) -> Path:
    for name in ("items.jsonl", "corpus.jsonl"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise DataError(f"{data_dir}: no items.jsonl or corpus.jsonl")


def history_examples(sequences: list[list[str]], history_items: int) -> tuple[list[Example], list[Example], list[Example]]:
    train, valid, test = [], [], []
    for seq in sequences:
        if len(seq) < 3:
            continue
        head = seq[:-2]
        for t in range(1, len(head)):
            train.append(Example(None, tuple(head[max(0, t - history_items) : t]), head[t]))
        valid.append(Example(None, tuple(seq[:-2][-history_items:]), seq[-2]))
        test.append(Example(None, tuple(seq[:-1][-history_items:]), seq[-1]))
    return train, valid, test


def query_examples(data_dir: Path) -> list[Example]:
    texts = {}
    with open(data_dir / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                texts[str(row["_id"])] = row["text"]
    qrels = data_dir / "qrels" / "train.tsv"
    return [Example(texts[q], (), doc) for q, doc, score in load_qrels(qrels) if score > 0 and q in texts]


def load_training_data(data_dir: str | Path, history_items: int = 10) -> TrainingData:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    catalog = load_items(items_file(data_dir))
    train: list[Example] = []
    valid: list[Example] = []
    test: list[Example] = []
    if (data_dir / "sequences.jsonl").is_file():
        train, valid, test = history_examples(load_sequences(data_dir / "sequences.jsonl"), history_items)
    if (data_dir / "queries.jsonl").is_file() and (data_dir / "qrels" / "train.tsv").is_file():
        train += query_examples(data_dir)
    known = catalog.index_of
    keep = lambda ex: ex.target in known and all(h in known for h in ex.history)  # noqa: E731
    return TrainingData(catalog, [e for e in train if keep(e)], [e for e in valid if keep(e)], [e for e in test if keep(e)])
