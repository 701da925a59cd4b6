"""Evaluation metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.evaluation.metrics import coverage, hallucination_rate, mrr_at, ndcg_at, recall_at, ret_per, score

RANKED = ["a", "b", "c", "d"]
REL = frozenset({"b", "d"})


def test_recall():
    assert recall_at(RANKED, REL, 1) == 0.0
    assert recall_at(RANKED, REL, 3) == 0.5  # b found, d beyond the cut
    assert recall_at(RANKED, REL, 4) == 1.0
    assert recall_at(RANKED, REL, 100) == 1.0  # a short list is not an error


def test_ndcg():
    # k=3: DCG = 1/log2(3) (b at rank 2); IDCG = 1 + 1/log2(3) (two relevant items at ranks 1, 2)
    assert ndcg_at(RANKED, REL, 3) == pytest.approx(0.386853, abs=1e-6)
    # k=4: DCG adds 1/log2(5) for d at rank 4
    assert ndcg_at(RANKED, REL, 4) == pytest.approx(0.650921, abs=1e-6)
    # one relevant item at rank 3: 1/log2(4) = 0.5; at rank 1: 1
    assert ndcg_at(RANKED, frozenset({"c"}), 10) == pytest.approx(0.5)
    assert ndcg_at(RANKED, frozenset({"a"}), 1) == 1.0
    assert ndcg_at(RANKED, frozenset({"z"}), 10) == 0.0


def test_mrr():
    assert mrr_at(RANKED, REL, 1) == 0.0
    assert mrr_at(RANKED, REL, 2) == 0.5
    assert mrr_at(RANKED, frozenset({"d"}), 4) == 0.25
    assert mrr_at(RANKED, frozenset({"d"}), 3) == 0.0


def test_duplicates_count_once():
    # the second "a" must not push "b" out of the top 2, nor score twice
    assert recall_at(["a", "a", "b"], frozenset({"b"}), 2) == 1.0
    assert mrr_at(["a", "a", "b"], frozenset({"b"}), 3) == 0.5
    assert ndcg_at(["b", "b"], frozenset({"b"}), 2) == 1.0


def test_empty_relevant_refused():
    with pytest.raises(ValueError):
        recall_at(RANKED, frozenset(), 10)


def test_summary_splits_head_and_tail():
    rankings = [["x", "t1"], ["t2"], ["y"], []]
    relevant = [frozenset({"t1"}), frozenset({"t2"}), frozenset({"t3"}), frozenset({"t4"})]
    head = np.array([True, True, False, False])
    s = score(rankings, relevant, head, ks=(1, 2)).summary()
    assert s["recall"]["1"] == {"overall": 0.25, "head": 0.5, "tail": 0.0}
    assert s["recall"]["2"] == {"overall": 0.5, "head": 1.0, "tail": 0.0}
    assert s["mrr"]["2"]["head"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["ndcg"]["2"]["overall"] == pytest.approx((1 / np.log2(3) + 1.0) / 4)
    # no tail case at all: None, not 0
    s = score(rankings[:2], relevant[:2], head[:2], ks=(1,)).summary()
    assert s["recall"]["1"]["tail"] is None


def test_coverage_ret_per_hallucination():
    rankings = [["a", "b", "c"], ["a", "d"], []]
    assert coverage(rankings, (1, 2, 10)) == {"1": 1, "2": 3, "10": 4}
    assert ret_per(rankings) == pytest.approx(5 / 3)
    # 2 invalid SIDs out of 5 generated
    assert hallucination_rate([[True, False, True], [False, True]]) == pytest.approx(0.4)
    assert hallucination_rate([]) == 0.0
