"""Baselines on small hand-made data where the right answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexer.evaluation.baselines import BASELINES, SASRecConfig
from indexer.evaluation.cases import Case, load_eval_data


def write_histories(d: Path, titles: list[str], sequences: list[list[int]]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "items.jsonl", "w") as f:
        f.writelines(json.dumps({"item_id": i, "title": t}) + "\n" for i, t in enumerate(titles))
    with open(d / "sequences.jsonl", "w") as f:
        f.writelines(json.dumps({"user_id": u, "item_ids": s}) + "\n" for u, s in enumerate(sequences))
    return d


def write_beir(d: Path, docs: list[str], queries: dict[str, tuple[str, str]]) -> Path:
    """``queries``: id -> (text, relevant doc id); all of them go to qrels/test.tsv, one to train."""
    (d / "qrels").mkdir(parents=True, exist_ok=True)
    with open(d / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": str(i), "title": t}) + "\n" for i, t in enumerate(docs))
    with open(d / "queries.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in queries.items())
    for name, rows in (("train", list(queries.items())[:1]), ("test", list(queries.items()))):
        with open(d / "qrels" / f"{name}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q}\t{doc}\t1\n" for q, (_, doc) in rows)
    return d


def test_popularity_ranks_by_training_interactions(tmp_path):
    # item 2 is the most frequent in the training part; item 0 only appears in held-out positions
    seqs = [[2, 1, 2, 2, 0, 0], [1, 2, 3, 0, 0]]
    data = load_eval_data(write_histories(tmp_path, ["a", "b", "c", "d"], seqs))
    assert data.catalog.popularity.tolist() == [0, 2, 4, 1]
    ranked = BASELINES["popularity"](exclude_history=False).rank(data, 3)
    assert ranked == [["2", "1", "3"]] * 2
    # by default a case's own history items are left out: case 1's history holds 0, 1 and 2, case 2's all four
    assert BASELINES["popularity"]().rank(data, 3) == [["3"], []]


def test_bm25_text_queries(tmp_path):
    docs = ["microscope for the school lab", "garden hose, green, 20 m", "digital lab scale", "stainless kettle"]
    queries = {"q1": ("microscope", "0"), "q2": ("digital scale for the lab", "2"), "q3": ("garden hose", "1")}
    data = load_eval_data(write_beir(tmp_path, docs, queries))
    assert data.test_source.endswith("test.tsv") and data.held_out
    bm25 = BASELINES["bm25"]()
    assert bm25.skip_reason(data) is None
    ranked = bm25.rank(data, 10)
    by_query = {c.query: r for c, r in zip(data.cases, ranked)}
    assert by_query["microscope"] == ["0"]  # only documents that share a term are returned
    assert by_query["digital scale for the lab"][:2] == ["2", "0"]  # two terms beat one
    assert by_query["garden hose"] == ["1"]


def test_dense_history_mean_of_vectors(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    d = write_histories(tmp_path, [f"item {i}" for i in range(6)], [[0, 1, 2, 3], [4, 5, 4, 5]])
    np.save(tmp_path / "v.npy", vectors)
    data = load_eval_data(d, vectors=tmp_path / "v.npy")
    dense = BASELINES["dense"](exclude_history=False)
    ranked = dense.rank(data, 6)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for case, r in zip(data.cases, ranked):
        q = unit[[int(h) for h in case.history]].mean(0)
        assert r == [str(i) for i in np.argsort(-(unit @ q))]
    # text queries cannot be embedded next to foreign vectors
    with_query = data.__class__(**{**data.__dict__, "cases": [Case("a text", (), frozenset({"1"}))]})
    assert "own vectors" in dense.skip_reason(with_query)


def test_sasrec_learns_a_sequential_pattern(tmp_path):
    # Items follow a cycle 0 -> 1 -> ... -> 11 -> 0; popularity is flat, so only order predicts the next item.
    n = 12
    rng = np.random.default_rng(0)
    seqs = [[int(s + t) % n for t in range(8)] for s in rng.integers(0, n, 240)]
    data = load_eval_data(write_histories(tmp_path, [f"item {i}" for i in range(n)], seqs))
    sasrec = BASELINES["sasrec"](seed=0, progress=False, sasrec=SASRecConfig(dim=32, epochs=40, lr=5e-3, dropout=0.0, patience=0),
                                 exclude_history=False)
    ranked = sasrec.rank(data, 3)
    hits = [next(iter(c.relevant)) == r[0] for c, r in zip(data.cases, ranked)]
    assert np.mean(hits) > 0.95
    # the popularity baseline cannot: every item is equally likely
    pop_hits = [next(iter(c.relevant)) == r[0] for c, r in zip(data.cases, BASELINES["popularity"](exclude_history=False).rank(data, 1))]
    assert np.mean(pop_hits) < 0.3


def test_registry_and_config_validation():
    assert set(BASELINES) == {"popularity", "bm25", "dense", "rules", "sasrec"}
    from sidcore.errors import DataError

    with pytest.raises(DataError):
        SASRecConfig(dim=30, heads=4)
    with pytest.raises(DataError):
        SASRecConfig(epochs=0)


def test_sasrec_stops_when_validation_stops_improving(tmp_path):
    n = 12
    rng = np.random.default_rng(1)
    seqs = [[int(s + t) % n for t in range(8)] for s in rng.integers(0, n, 240)]
    data = load_eval_data(write_histories(tmp_path, [f"item {i}" for i in range(n)], seqs))
    sasrec = BASELINES["sasrec"](seed=0, progress=False, sasrec=SASRecConfig(dim=32, epochs=200, lr=5e-3, dropout=0.0, patience=2))
    sasrec.rank(data, 3)
    fit = sasrec.fitted
    assert fit["epochs_run"] < 200 and fit["epochs_run"] - fit["best_epoch"] == 2  # stopped two epochs after the best
    assert fit["val_recall10"] == max(fit["val_curve"]) == 1.0


def test_rules_follow_what_came_next_and_tune_on_validation(tmp_path):
    # Chains through 30 items (s -> s+1 -> ... -> s+5, mod 30); item 30 is the most popular but follows nothing.
    seqs = [[30, 30] + [(s + t) % 30 for t in range(6)] for s in range(30)] * 4
    data = load_eval_data(write_histories(tmp_path, [f"item {i}" for i in range(31)], seqs))
    assert int(np.argmax(data.catalog.popularity)) == 30
    rules = BASELINES["rules"](seed=0)
    ranked = rules.rank(data, 2)
    for case, r in zip(data.cases, ranked):
        assert r[0] == str((int(case.history[-1]) + 1) % 30), (case.history, r)
    assert rules.fitted["val_recall10"] == 1.0 and rules.fitted["combinations_tried"] > 10
    assert set(rules.fitted) >= {"window", "decay", "reverse", "last", "recency", "beta"}
