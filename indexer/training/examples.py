"""Decoder training data from a data folder: histories, queries, and item text views.

Folder layouts (as in ../shared/data):
- ``items.jsonl`` + ``sequences.jsonl``: leave-one-out on histories: train on ``item_ids[:-2]``
  (one whole-sequence row per user), validate on ``item_ids[-2]``, test on ``item_ids[-1]``
  (``TrainConfig.train_valid`` extends the training rows of users outside the validation sample);
- ``corpus.jsonl`` + ``queries.jsonl`` + ``qrels/train.tsv`` (BEIR): query text -> document;
  validation on ``qrels/dev.tsv`` if there is one, else on a seeded share of the training queries.
Item views (an item's title, each sentence of its text, its lead, random spans) teach the decoder
every item from its own text, tail and cold-start ones included, whatever the interactions say.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.data.catalog import Catalog, load_items, load_qrels, load_sequences
from sidcore.errors import DataError

HOLDOUT = 2  # the last two items of a sequence are validation and test


@dataclass(frozen=True)
class Example:
    query: str | None
    history: tuple[str, ...]  # item ids, oldest first
    target: str  # item id


@dataclass(frozen=True)
class TrainingData:
    catalog: Catalog
    sequences: list[tuple[str, ...]]  # training part of each history (whole-sequence rows)
    queries: list[Example]  # text -> item training pairs
    valid: list[Example]
    test: list[Example]

    @property
    def train(self) -> list[Example]:
        """Every (prompt -> next item) pair of the training part, as one example each."""
        out = list(self.queries)
        for seq in self.sequences:
            out += [Example(None, seq[:t], seq[t]) for t in range(1, len(seq))]
        return out


def extend_sequences(sequences: list[tuple[str, ...]], examples: list[Example]) -> list[tuple[str, ...]]:
    """``sequences`` with each example's target appended to the sequence that is its history: a
    validation item continues its user's training sequence rather than repeating it as a second
    row. An example whose history is no sequence (one too short to train on) becomes its own."""
    pending = defaultdict(list)
    for e in examples:
        pending[e.history].append(e.target)
    out = [s + (pending[s].pop(),) if pending.get(s) else s for s in sequences]
    return out + [h + (t,) for h, targets in pending.items() for t in targets]


def items_file(data_dir: Path) -> Path:
    for name in ("items.jsonl", "corpus.jsonl"):
        if (data_dir / name).is_file():
            return data_dir / name
    raise DataError(f"{data_dir}: no items.jsonl or corpus.jsonl")


def history_examples(sequences: list[list[str]]) -> tuple[list[tuple[str, ...]], list[Example], list[Example]]:
    """(training sequences, validation examples, test examples) of leave-one-out. Examples carry
    the whole history (prompts keep its newest items; a refit trains on all of it)."""
    train, valid, test = [], [], []
    for seq in sequences:
        if len(seq) < 3:
            continue
        train.append(tuple(seq[:-HOLDOUT]))
        valid.append(Example(None, tuple(seq[:-2]), seq[-2]))
        test.append(Example(None, tuple(seq[:-1]), seq[-1]))
    return train, valid, test


def _queries(data_dir: Path) -> dict[str, str]:
    texts = {}
    with open(data_dir / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                texts[str(row["_id"])] = row["text"]
    return texts


def query_examples(data_dir: Path, qrels: str = "train") -> list[Example]:
    texts = _queries(data_dir)
    path = data_dir / "qrels" / f"{qrels}.tsv"
    return [Example(texts[q], (), doc) for q, doc, score in load_qrels(path) if score > 0 and q in texts]


def split_queries(examples: list[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(training, validation) by query text, a seeded ``share`` of the queries held out."""
    queries = sorted({e.query for e in examples})
    held = set(np.random.default_rng(seed).permutation(queries)[: round(share * len(queries))].tolist()) if share else set()
    return [e for e in examples if e.query not in held], [e for e in examples if e.query in held]


def load_training_data(data_dir: str | Path, val_share: float = 0.1, seed: int = 0) -> TrainingData:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    catalog = load_items(items_file(data_dir))
    sequences: list[tuple[str, ...]] = []
    queries: list[Example] = []
    valid: list[Example] = []
    test: list[Example] = []
    if (data_dir / "sequences.jsonl").is_file():
        sequences, valid, test = history_examples(load_sequences(data_dir / "sequences.jsonl"))
    if (data_dir / "queries.jsonl").is_file() and (data_dir / "qrels" / "train.tsv").is_file():
        queries = query_examples(data_dir)
        if (data_dir / "qrels" / "dev.tsv").is_file():
            valid += query_examples(data_dir, "dev")
        elif not valid:
            queries, valid = split_queries(queries, val_share, seed)
    known = catalog.index_of
    unknown = sorted({i for s in sequences for i in s if i not in known} | {e.target for e in queries if e.target not in known})
    if unknown and len(unknown) == len({i for s in sequences for i in s} | {e.target for e in queries}):
        raise DataError(f"{data_dir}: none of the items its interactions name are in its catalog (e.g. {unknown[0]!r})")
    keep = lambda ex: ex.target in known and all(h in known for h in ex.history)  # noqa: E731
    sequences = [tuple(i for i in s if i in known) for s in sequences]
    return TrainingData(catalog, [s for s in sequences if len(s) >= 2], [e for e in queries if keep(e)],
                        [e for e in valid if keep(e)], [e for e in test if keep(e)])


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def text_views(title: str, text: str, rng: np.random.Generator, spans: int = 2, span_words: tuple[int, int] = (8, 32)) -> list[str]:
    """The texts an item is taught by: its title, each sentence of its text, its lead (title +
    first sentence), and ``spans`` random word spans; duplicates dropped, order kept."""
    sentences = [s.strip() for s in _SENTENCE.split(text) if len(s.split()) >= 3] if text else []
    views = [title] if title else []
    views += sentences
    if sentences and title:
        views.append(f"{title}. {sentences[0]}")
    words = text.split() if text else []
    for _ in range(spans if len(words) > span_words[0] else 0):
        n = int(rng.integers(span_words[0], min(span_words[1], len(words)) + 1))
        at = int(rng.integers(0, len(words) - n + 1))
        views.append(" ".join(words[at : at + n]))
    return list(dict.fromkeys(v for v in views if v))
