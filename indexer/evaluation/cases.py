"""Test cases and the training-side facts evaluation needs (popularity, head/tail, sequences).

A case is a text query and/or a history with the set of items that count as relevant. Sources:

- default, a folder with ``sequences.jsonl``: leave-one-out, history ``item_ids[:-1]`` -> target
  ``item_ids[-1]`` (the learners train on ``item_ids[:-2]`` and validate on ``item_ids[-2]``;
  ``runner.with_validation_items`` adds the validation items of users no one validates on);
- default, a BEIR folder: its ``qrels/test.tsv``, else ``qrels/dev.tsv``, else ``qrels/train.tsv``
  (which the decoder also trains on, so the report marks that source as not held out);
- ``--test FILE``: history cases ``{"history": [ids], "target": id}`` one per line, or with
  ``--test-qrels`` a BEIR queries JSONL scored against that qrels TSV.

Popularity, and so head/tail, counts training interactions only: ``item_ids[:-2]`` of each
sequence, or the pairs of ``qrels/train.tsv`` less the claims held out for validation.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.data.catalog import Catalog, count_items, count_popularity, load_qrels, load_sequences, load_vectors, read_jsonl
from indexer.split import SplitConfig, head_mask
from indexer.training.examples import TrainingData, load_training_data
from sidcore.errors import DataError

# Training parts end at item_ids[:-2]; the last two items are validation and test.
HOLDOUT = 2


@dataclass(frozen=True)
class Case:
    query: str | None
    history: tuple[str, ...]  # item ids, oldest first
    relevant: frozenset[str]

    def __post_init__(self) -> None:
        if not self.query and not self.history:
            raise DataError("a test case needs a query text or a history")
        if not self.relevant:
            raise DataError("a test case needs at least one relevant item")


@dataclass(frozen=True)
class EvalData:
    """What every method and baseline sees: the training data, the test cases, head/tail."""

    data_dir: Path
    training: TrainingData
    catalog: Catalog  # popularity = training interactions
    head: np.ndarray  # per catalog item
    cases: list[Case]
    train_sequences: list[list[str]]  # training part of each history (empty for BEIR data)
    test_source: str
    held_out: bool  # False when the cases are the decoder's own training pairs

    def case_head(self) -> np.ndarray:
        """A case is head when all its relevant items are head items."""
        idx = self.catalog.index_of
        return np.array([all(self.head[idx[i]] for i in c.relevant) for c in self.cases], dtype=bool)

    @property
    def has_queries(self) -> bool:
        return any(c.query for c in self.cases)

    @property
    def has_histories(self) -> bool:
        return any(c.history for c in self.cases)


def _history_cases(path: Path, known: dict[str, int]) -> list[Case]:
    cases = []
    for lineno, row in read_jsonl(path):
        if not isinstance(row.get("history"), list) or "target" not in row:
            hint = " (a BEIR queries file needs --test-qrels)" if "_id" in row else ""
            raise DataError(f"{path}:{lineno}: expected {{\"history\": [ids], \"target\": id}}{hint}")
        history, target = tuple(str(i) for i in row["history"]), str(row["target"])
        unknown = [i for i in (*history, target) if i not in known]
        if unknown:
            raise DataError(f"{path}:{lineno}: item {unknown[0]!r} is not in the catalog")
        cases.append(Case(row.get("query") or None, history, frozenset({target})))
    return cases


def _query_cases(queries: Path, qrels: Path, known: dict[str, int]) -> list[Case]:
    texts = {}
    for lineno, row in read_jsonl(queries):
        if "_id" not in row or not isinstance(row.get("text"), str):
            raise DataError(f"{queries}:{lineno}: expected a JSON object with '_id' and 'text'")
        texts[str(row["_id"])] = row["text"]
    relevant: dict[str, set[str]] = defaultdict(set)
    for q, doc, s in load_qrels(qrels):
        if s > 0:
            if q not in texts:
                raise DataError(f"{qrels}: query {q!r} is not in {queries}")
            if doc in known:
                relevant[q].add(doc)
    return [Case(texts[q], (), frozenset(docs)) for q, docs in relevant.items()]


def load_eval_data(
    data_dir: str | Path,
    test: str | Path | None = None,
    test_qrels: str | Path | None = None,
    vectors: str | Path | None = None,
    split: SplitConfig = SplitConfig(),
    history_items: int = 10,
) -> EvalData:
    data_dir = Path(data_dir)
    training = load_training_data(data_dir)
    catalog = training.catalog
    if vectors is not None:
        catalog = catalog.with_vectors(load_vectors(vectors, len(catalog)))
    known = catalog.index_of
    seq_path, qrels_dir = data_dir / "sequences.jsonl", data_dir / "qrels"
    if seq_path.is_file():
        popularity = count_popularity(catalog, seq_path, holdout_last=HOLDOUT)
        train_sequences = [[i for i in s[:-HOLDOUT] if i in known] for s in load_sequences(seq_path) if len(s) > HOLDOUT]
    elif (qrels_dir / "train.tsv").is_file():
        # Only the claims the decoder trains on: those it selects on are held out like a
        # history's [-2] item, so their documents look to the index as the test claims' do.
        popularity = count_items(catalog, [e.target for e in training.queries], qrels_dir / "train.tsv")
        train_sequences = []
    else:
        raise DataError(f"{data_dir}: no sequences.jsonl or qrels/train.tsv to train on")
    catalog = catalog.with_popularity(popularity)

    held_out = True
    if test_qrels is not None and test is None:
        raise DataError("--test-qrels needs --test (the queries JSONL)")
    if test is not None:
        test = Path(test)
        if not test.is_file():
            raise DataError(f"file not found: {test}")
        cases = _query_cases(test, Path(test_qrels), known) if test_qrels else _history_cases(test, known)
        source = f"{test}" + (f" + {test_qrels}" if test_qrels else "")
    elif seq_path.is_file():
        cases = [Case(ex.query, ex.history[-history_items:], frozenset({ex.target})) for ex in training.test]
        source = f"{seq_path}: last item of each sequence"
    else:
        qrels = next((qrels_dir / f"{n}.tsv" for n in ("test", "dev", "train") if (qrels_dir / f"{n}.tsv").is_file()))
        cases = _query_cases(data_dir / "queries.jsonl", qrels, known)
        held_out = qrels.stem != "train"
        source = str(qrels)
    if not cases:
        raise DataError(f"no test cases in {source} whose items are in the catalog")
    training = dataclasses.replace(training, catalog=catalog)  # the decoder sees the vectors the index is built from
    return EvalData(data_dir, training, catalog, head_mask(catalog.popularity, split), cases, train_sequences, source, held_out)
