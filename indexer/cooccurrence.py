"""Sequential co-occurrence counts: which items follow (or precede) which in users' histories.

What the count-based rules baseline (``indexer.evaluation.baselines.Rules``) ranks with, and what
the decoder's rules teacher (``indexer.training.teacher``) distils into training: one sparse
matrix, so both read the same pairs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp


def transitions(seqs: list[np.ndarray], n: int, window: int, decay: float, reverse: float) -> sp.csr_matrix:
    """C[a, b] = sum over training sequences of decay^(d-1) for b d <= window items after a,
    plus ``reverse`` times the same with b before a. ``seqs``: item rows (ints < n) per sequence."""
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        long = [s for s in seqs if len(s) > d]
        if not long:
            break
        a = np.concatenate([s[:-d] for s in long])
        b = np.concatenate([s[d:] for s in long])
        w = decay ** (d - 1)
        rows += [a, b] if reverse else [a]
        cols += [b, a] if reverse else [b]
        vals += [np.full(len(a), w), np.full(len(a), w * reverse)] if reverse else [np.full(len(a), w)]
    if not rows:
        return sp.csr_matrix((n, n))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def row_scale(C: sp.csr_matrix, beta: float) -> np.ndarray:
    """float [N]: what ``normalise_rows`` multiplies each row of C by, 1 / total ** beta."""
    return 1.0 / np.maximum(np.asarray(C.sum(1)).ravel(), 1e-9) ** beta


def normalise_rows(C: sp.csr_matrix, beta: float) -> sp.csr_matrix:
    """Each row of C divided by its total to the power ``beta`` (0: unchanged), so a popular item's
    many pairs do not outvote a rare item's few."""
    if not beta:
        return C
    return (sp.diags(row_scale(C, beta)) @ C).tocsr()


def recent_votes(history: Sequence[int], last: int, recency: float) -> tuple[list[int], np.ndarray]:
    """The items of a history that vote on what comes next: its newest ``last``, newest first, and
    their weights recency^(steps back)."""
    recent = list(history[-last:])[::-1]
    return recent, recency ** np.arange(len(recent))
