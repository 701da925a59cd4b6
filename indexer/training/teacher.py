"""Teachers: soft SID targets that other retrievers hand the decoder in training.

**The rules teacher**: soft SID targets from sequential co-occurrence counts.

The count-based rules baseline beats the decoder on games through exact per-pair memory: for any
of a user's newest items it knows which items followed (and preceded) it anywhere in the training
sequences. The decoder sees each pair only in the rows that hold it. The teacher hands it the
rules' whole answer as a target: at each history position that predicts a target, the rules'
scores of every item given the row's items so far (the user's own items left out, as the rules
rank). The counts were made from the row's own sequence, while the request the decoder serves
never holds the pairs to its future, so the row's own later items are taken out of them first.

The scores reach the decoder two ways. Kept per item (``item_scores``), they are distilled into the
next-item head, which cannot memorise them in its 128 dimensions. Summed per SID code
(``code_targets``), they are distilled into the SID positions the beams read: the first code, and at
deeper positions the items that share the target's gold prefix, summed per code there. Training
only: ranking stays the decoder's scores, and no count is served.

**The dense teacher**: MiniLM's ranking of the catalog for a query or view text. On a text corpus
most documents are cited by no training query and reach the decoder only through their own views;
dense retrieval reaches them through the embedding space's neighbourhoods. The teacher hands the
decoder those neighbourhoods at each query row's first-code position (and, with
``dense_levels``, at the next positions given the gold prefix). Training only, likewise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from indexer.cooccurrence import normalise_rows, recent_votes, row_scale, transitions


@dataclass(frozen=True)
class RulesTeacherConfig:
    """The rule the teacher scores with; the defaults are the fit of the rules baseline on games'
    validation users (``RulesConfig``'s search: window 50, decay 1, reverse 0.3, the newest 5
    items voting with recency 0.6, rows normalised by their total to the power 0.5).

    Args:
        window: how far after an item another still counts as following it.
        decay: weight per extra step between the two.
        reverse: weight of the pairs the other way round.
        last: newest items of the prefix that vote.
        recency: weight per step back among them.
        beta: normalisation of an item's row by its total count.
    """

    window: int = 50
    decay: float = 1.0
    reverse: float = 0.3
    last: int = 5
    recency: float = 0.6
    beta: float = 0.5


class RulesTeacher:
    """The rules' scores of every item at the target positions of a batch.

    Args:
        sequences: the training sequences, as rows of the decoder's item table.
        num_items: rows of the decoder's item table (N).
        cfg: the rule.
    """

    def __init__(self, sequences: list[np.ndarray], num_items: int, cfg: RulesTeacherConfig = RulesTeacherConfig()):
        self.cfg = cfg
        raw = transitions(sequences, num_items, cfg.window, cfg.decay, cfg.reverse)
        self.counts = normalise_rows(raw, cfg.beta)
        self.row_scale = row_scale(raw, cfg.beta)  # to take a row's own pairs out of ``counts`` again

    def item_scores(self, content: np.ndarray, first: np.ndarray, own_future: bool = False) -> sp.csr_matrix:
        """For content [B, T] (item row each ``<item>`` marker carries, -1 elsewhere) and first
        [B, T] (bool: the positions that predict a target's first code), the rules' score of
        every item at each of the P first positions, row-major (csr [P, N]): the newest items of
        the row so far vote with their normalised counts, and the row's items so far score 0.
        With ``own_future`` the pairs from each voter to the row's later items (the next item
        included) are taken out of the counts, as if the row's sequence had ended there."""
        cfg = self.cfg
        votes_r, votes_c, votes_w, own_r, own_c = [], [], [], [], []
        less_r, less_c, less_w = [], [], []
        seen_at = np.cumsum(content >= 0, axis=1)  # the row's items up to each position
        rows = [c[c >= 0].tolist() for c in content]
        for p, (b, t) in enumerate(zip(*np.nonzero(first))):
            row, seen = rows[b], int(seen_at[b, t])
            items = row[:seen]
            recent, w = recent_votes(items, cfg.last, cfg.recency)
            votes_r += [p] * len(recent)
            votes_c += recent
            votes_w += w.tolist()
            own_r += [p] * len(items)
            own_c += items
            if own_future:
                for back, (a, wa) in enumerate(zip(recent, w)):
                    at = seen - 1 - back  # the voter's place in the row
                    for f in range(seen, min(len(row), at + cfg.window + 1)):
                        less_r.append(p)
                        less_c.append(row[f])
                        less_w.append(wa * self.row_scale[a] * cfg.decay ** (f - at - 1))
        p = int(first.sum())
        n = self.counts.shape[0]
        votes = sp.csr_matrix((votes_w, (votes_r, votes_c)), shape=(p, n))
        own = sp.csr_matrix((np.ones(len(own_r)), (own_r, own_c)), shape=(p, n))
        scores = votes @ self.counts
        if own_future:
            scores = scores - sp.csr_matrix((less_w, (less_r, less_c)), shape=(p, n))
            scores.data = np.maximum(scores.data, 0.0)  # a pair only the row holds cancels to float error
        scores = scores - scores.multiply(own.astype(bool))
        scores.eliminate_zeros()
        return scores.tocsr()


def code_targets(scores: sp.csr_matrix, gold: np.ndarray, codes: np.ndarray, num_local: int, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rules teacher's distribution over the SID range at SID position ``level`` of each of P
    targets (float32 [P, num_local]), from ``scores`` (csr [P, N], ``RulesTeacher.item_scores`` at
    the P target positions), ``gold`` (long [P], each target's item row) and ``codes`` (long
    [N, S], each item's local SID codes, then ``<sid_end>``, then -1, as ``DenseTeacher`` takes
    them): at level 0 the scores summed per first code; at level l > 0 those of the items that
    start with the target's gold prefix of length l, summed per code at l (``<sid_end>`` where a
    SID ends there); each row normalised. Also which rows have one (bool [P]: none where no
    scored item shares the prefix, or the target's SID has ended before ``level``)."""
    coo = scores.tocoo()
    r, c, w = coo.row, coo.col, coo.data
    keep = codes[c, level] >= 0
    if level:
        keep &= (codes[c, :level] == codes[gold[r], :level]).all(1)
    r, c, w = r[keep], c[keep], w[keep]
    per_code = sp.csr_matrix((w, (r, codes[c, level])), shape=(len(gold), num_local)).toarray().astype(np.float32)
    total = per_code.sum(1, keepdims=True)
    has = (total[:, 0] > 0) & (codes[gold, level] >= 0)
    return torch.from_numpy(per_code / np.maximum(total, 1e-12)), torch.from_numpy(has)


class DenseTeacher:
    """Soft SID targets from cosine similarity in the embedding space queries come from.

    Args:
        vectors: float [N, D] L2-normalised item embeddings (the decoder's item table).
        codes: long [N, S] each item's local SID codes, then ``<sid_end>``, then -1 to the width
            S (the longest SID + 1).
        num_local: width of the decoder's SID range (the targets' last dimension).
        temperature: softmax temperature over the cosines.
    """

    def __init__(self, vectors: torch.Tensor, codes: torch.Tensor, num_local: int, temperature: float):
        self.vectors, self.codes, self.num_local, self.temperature = vectors, codes, num_local, temperature

    def share(self, queries: torch.Tensor) -> torch.Tensor:
        """For queries [B, D] (L2-normalised), each item's softmax share (float32 [B, N])."""
        return (queries.float() @ self.vectors.T / self.temperature).softmax(-1)

    def targets(self, share: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """The teacher's distribution over the SID range (float32 [B, num_local]) at the position
        after ``prefix`` (long [B, l]: each row's gold codes before it; l = 0 at the first code):
        the ``share`` [B, N] of the items that start with that prefix, summed per code at level l
        (``<sid_end>`` for a SID that ends there) and renormalised. The gold item always starts
        with its own prefix, so no row is empty."""
        level = prefix.shape[1]
        if level:
            share = share * (self.codes[:, :level] == prefix[:, None, :]).all(-1)
        per_code = share.new_zeros(len(share), self.num_local).index_add_(1, self.codes[:, level].clamp(min=0), share)
        return per_code / per_code.sum(-1, keepdim=True).clamp_min(1e-12)
