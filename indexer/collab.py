"""Collaborative item vectors: what users' histories say about items.

Text embeddings put items that *read* alike together; users' histories say which items are
*bought* together. On games the second matters most (a co-occurrence rule beats text
similarity 2.5x), and SIDs built on text alone scatter co-purchased items over unrelated first
codes, which the decoder then has to guess. Appending these vectors (times ``weight``) to the
text embedding before quantization puts co-purchased items under shared prefixes.

Each *view* is one count matrix, kept to its positive PMI (the pairs seen together more than
chance) and cut by a truncated SVD (scipy's ARPACK) to ``dim`` dimensions per item, L2-normalised:
- ``together``: C[a, b] counts the training sequences holding both a and b (each item once per
  sequence); an item's vector is its row of U * sqrt(S).
- ``after``: T[a, b] counts b coming at most ``reach`` items after a, each step further
  back worth ``AFTER_DECAY`` times less; an item's vector is its *column* side, V * sqrt(S), so
  items that follow the same items end up close. That is what the decoder's first code has to
  tell from a history: the next item's code is easier to guess when what tends to come next
  shares it.
- ``before``: the *row* side of the same T, U * sqrt(S): items followed by the same items.
Views are concatenated in the order given. Items with no pair in a view (tail, cold start) get
zeros there: their SIDs then come from their text and the other views.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from indexer.cooccurrence import transitions
from sidcore.errors import DataError

VIEWS = ("together", "after", "before")
DEFAULT_VIEWS = ("together", "after", "before")
# The directed pairs' reach: of windows 1, 5 and 50, 5 (decay 0.7) put the most next first codes
# in reach on games' validation users (benchmarks/probe_collab_views.py's screen, `after` alone).
# With all three views the screen prefers shorter reaches (2: +0.014) by lumping items into fewer
# codes, and a decoder on reach 2 was +0.0065 and -0.0035 on validation at two seeds (stops 48-49), so 5 stays.
AFTER_WINDOW = 5
DIM = 64  # per view: what the index appends to the text embedding, and what ``collab`` decoder item content projects
AFTER_DECAY = 0.7


def collaborative_vectors(item_ids: Sequence[str], sequences: Sequence[Sequence[str]], dim: int = DIM, seed: int = 0,
                          views: Sequence[str] = DEFAULT_VIEWS, reach: int = AFTER_WINDOW) -> tuple[np.ndarray, dict]:
    """float32 [len(item_ids), dim * len(views)] vectors (zeros for items in no pair) and a few statistics.

    ``sequences`` are the *training* histories (never the held-out items); unknown ids are ignored.
    ``reach``: how many items after a the directed views still count b (screens only vary it).
    """
    check_views(views)
    n = len(item_ids)
    if dim >= n:
        raise DataError(f"collaborative vectors of {dim} dimensions need more than {dim} items, the catalog has {n}")
    row = {item: i for i, item in enumerate(item_ids)}
    rows = [np.fromiter((row[x] for x in seq if x in row), dtype=np.int64) for seq in sequences]
    parts, stats = [], {"views": list(views)}
    factored = {}  # "after" and "before" are the two sides of one SVD: factor it once
    for view in views:
        kind = "together" if view == "together" else "directed"
        if kind not in factored:
            counts = _together(rows, n) if kind == "together" else _directed(rows, n, reach)
            if counts.nnz == 0:
                raise DataError(f"no two catalog items {'share a training sequence' if kind == 'together' else 'follow one another'}: "
                                f"collaborative vectors ({view}) need such pairs")
            ppmi = _ppmi(counts)
            factored[kind] = (counts.nnz, ppmi, svds(ppmi, k=dim, solver="arpack", random_state=seed))
        pairs, ppmi, (u, s, vt) = factored[kind]
        side, has = (vt.T, ppmi.sum(0)) if view == "after" else (u, ppmi.sum(1))
        v = side * np.sqrt(s)
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.where(norm > 0, v / np.maximum(norm, 1e-12), 0.0)
        has = np.asarray(has).ravel() > 0
        v[~has] = 0.0
        parts.append(v)
        stats[view] = {"pairs": int(pairs), "ppmi_pairs": int(ppmi.nnz), "items_with_vectors": int(has.sum())}
    out = np.concatenate(parts, 1).astype(np.float32)
    # "dim": the width appended to the text embedding, which cold-start items fill with zeros.
    stats |= {"dim": int(out.shape[1]), "items_with_vectors": int((np.abs(out).sum(1) > 0).sum())}
    return out, stats


def check_views(views: Sequence[str]) -> None:
    if not views or not set(views) <= set(VIEWS) or len(set(views)) < len(views):
        raise DataError(f"collaborative views must be distinct names among {', '.join(VIEWS)}, got {','.join(views) or 'none'}")


def parse_views(text: str) -> tuple[str, ...]:
    """Views from a comma-separated option value, checked."""
    views = tuple(v.strip() for v in text.split(",") if v.strip())
    check_views(views)
    return views


def _together(rows: list[np.ndarray], n: int) -> sp.coo_matrix:
    held = [np.unique(r) for r in rows]  # each item once per sequence
    users = np.repeat(np.arange(len(held)), [len(h) for h in held])
    items = np.concatenate(held) if held else np.zeros(0, dtype=np.int64)
    x = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(max(len(rows), 1), n))
    return _off_diagonal(x.T @ x)


def _directed(rows: list[np.ndarray], n: int, reach: int) -> sp.coo_matrix:
    return _off_diagonal(transitions(rows, n, reach, AFTER_DECAY, 0.0))


def _off_diagonal(c: sp.spmatrix) -> sp.coo_matrix:
    c = sp.csr_matrix(c)
    c.setdiag(0)
    c.eliminate_zeros()
    return c.tocoo()


def _ppmi(c: sp.coo_matrix) -> sp.csr_matrix:
    total, rows, cols = c.sum(), np.asarray(c.sum(1)).ravel(), np.asarray(c.sum(0)).ravel()
    pmi = np.log(c.data * total / (rows[c.row] * cols[c.col]))
    keep = pmi > 0
    return sp.csr_matrix((pmi[keep], (c.row[keep], c.col[keep])), shape=c.shape)
