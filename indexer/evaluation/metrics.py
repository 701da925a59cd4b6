"""Ranking metrics with binary relevance, per case and aggregated overall / head / tail.

Per case (a ranked list of item ids, a set of relevant ids, a cut-off K):

    Recall@K = |relevant ∩ top K| / |relevant|
    NDCG@K   = Σ_{rank r ≤ K, item relevant} 1 / log2(r + 1)  /  Σ_{r ≤ min(K, |relevant|)} 1 / log2(r + 1)
    MRR@K    = 1 / (rank of the first relevant item) if it is within K, else 0

With one relevant item (leave-one-out) Recall@K is the hit rate. Duplicates in a ranking count
once, at their first rank, so a method cannot score twice with the same item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def _dedup(ranked: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ranked))


def recall_at(ranked: Sequence[str], relevant: frozenset[str] | set[str], k: int) -> float:
    if not relevant:
        raise ValueError("a case needs at least one relevant item")
    return len(set(_dedup(ranked)[:k]) & relevant) / len(relevant)


def ndcg_at(ranked: Sequence[str], relevant: frozenset[str] | set[str], k: int) -> float:
    if not relevant:
        raise ValueError("a case needs at least one relevant item")
    dcg = sum(1.0 / math.log2(r + 2) for r, item in enumerate(_dedup(ranked)[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(r + 2) for r in range(min(k, len(relevant))))
    return dcg / ideal


def mrr_at(ranked: Sequence[str], relevant: frozenset[str] | set[str], k: int) -> float:
    if not relevant:
        raise ValueError("a case needs at least one relevant item")
    for r, item in enumerate(_dedup(ranked)[:k]):
        if item in relevant:
            return 1.0 / (r + 1)
    return 0.0


FUNCTIONS = {"recall": recall_at, "ndcg": ndcg_at, "mrr": mrr_at}


@dataclass(frozen=True)
class Scores:
    """``values[metric][k]`` holds one score per case; ``head`` marks the head cases."""

    values: dict[str, dict[int, np.ndarray]]
    head: np.ndarray

    def summary(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """``{metric: {str(k): {overall, head, tail}}}``; a group with no cases is None."""
        groups = {"overall": np.ones_like(self.head), "head": self.head, "tail": ~self.head}
        return {
            metric: {
                str(k): {g: (float(v[m].mean()) if m.any() else None) for g, m in groups.items()}
                for k, v in per_k.items()
            }
            for metric, per_k in self.values.items()
        }


def score(rankings: Sequence[Sequence[str]], relevant: Sequence[frozenset[str]], head: np.ndarray, ks: Sequence[int]) -> Scores:
    """Every metric at every K for every case."""
    if not len(rankings) == len(relevant) == len(head):
        raise ValueError("rankings, relevant sets and head flags must have one entry per case")
    values = {
        name: {k: np.array([fn(r, rel, k) for r, rel in zip(rankings, relevant)], dtype=np.float64) for k in ks}
        for name, fn in FUNCTIONS.items()
    }
    return Scores(values, np.asarray(head, dtype=bool))


def coverage(rankings: Sequence[Sequence[str]], ks: Sequence[int]) -> dict[str, int]:
    """Distinct items returned in the top K over all cases, per K."""
    return {str(k): len({item for r in rankings for item in r[:k]}) for k in ks}


def ret_per(rankings: Sequence[Sequence[str]]) -> float:
    """Mean number of items returned per query."""
    return float(np.mean([len(r) for r in rankings])) if len(rankings) else 0.0


def hallucination_rate(valid: Sequence[Sequence[bool]]) -> float:
    """Share of generated SIDs that are not in the index, over all queries' generated SIDs."""
    flat = [v for per_query in valid for v in per_query]
    return float(1.0 - np.mean(flat)) if flat else 0.0
