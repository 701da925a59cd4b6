"""The beam-search state machine both engines drive, so they select identically.

Per step an engine supplies masked log-probabilities over the SID range for every beam row
(R requests x W beams). Per request the best ``2W`` (beam, token) candidates are taken: those
ending in ``<sid_end>`` finish (a terminal node's SID), the best ``W`` others continue. Because
each request's top 2W candidates lie within every beam's own top 2W, an engine that only sees
per-beam top-2W log-probs (vLLM) selects exactly what a full-distribution engine does.
A request stops when its ``num_sids``-th finished score is at least the best live beam's bound
(log-probs only lower a sum), or at depth L.

A request may carry an ``ItemMask`` (exclusions, filters): ``allowed()`` then also clears the
moves leading only to items the request may not return, so its beams go to SIDs it can use.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from sidcore.engines.base import DecodeStats, Hit
from sidcore.index.item_mask import ItemMask
from sidcore.index.mask import INVALID, TrieMask

NEG = float("-inf")


def penalised(score, length, length_penalty: float):
    """A SID's summed log-probability (float or array) over ``(length + 1) ** length_penalty``."""
    return score / (length + 1) ** length_penalty if length_penalty else score


class BeamSearch:
    """``item_masks``: per request, the items it may return (None: all); constrained decoding only."""

    def __init__(
        self, mask: TrieMask, num_requests: int, beam_width: int, num_sids: int, length_penalty: float, constrained: bool = True,
        item_masks: Sequence[ItemMask | None] | None = None,
    ):  # fmt: skip
        self.mask = mask
        self.vocab = mask.vocab
        self.R, self.W, self.k = num_requests, beam_width, num_sids
        self.S, self.end, self.L = self.vocab.num_local, self.vocab.end_local, self.vocab.num_layers
        self.constrained = constrained
        self.length_penalty = length_penalty
        self.depth = 0
        self.scores = torch.full((self.R, self.W), NEG)
        self.scores[:, 0] = 0.0
        self.nodes = torch.full((self.R * self.W,), mask.root, dtype=torch.long)
        self.tokens = torch.zeros((self.R * self.W, 0), dtype=torch.long)
        self.finished: list[list[Hit]] = [[] for _ in range(self.R)]
        self.done = torch.zeros(self.R, dtype=torch.bool)
        self.stats = DecodeStats()
        self._offsets = torch.tensor(self.vocab.offsets, dtype=torch.long)
        self._layer_of = torch.repeat_interleave(torch.arange(self.L + 1), torch.tensor([*self.vocab.sizes, 1]))
        if item_masks is not None and len(item_masks) != num_requests:
            raise ValueError(f"{len(item_masks)} item masks for {num_requests} requests")
        self._item_masks = [(r, m) for r, m in enumerate(item_masks or ()) if m is not None]

    @property
    def live(self) -> torch.Tensor:
        """Bool [R*W]: rows that still carry a beam."""
        return torch.isfinite(self.scores).view(-1) & ~self.done.repeat_interleave(self.W)

    def allowed(self) -> torch.Tensor:
        """Bool [R*W, S]: the trie mask less each request's excluded items, or (unconstrained) just the layer order."""
        if self.constrained:
            nodes = self.nodes.clamp(min=0)
            ok = self.mask.allowed(nodes).cpu()
            if self._item_masks:
                view, at, live = ok.numpy(), nodes.cpu().numpy(), self.live.numpy()
                for r, m in self._item_masks:
                    beams = np.flatnonzero(live[r * self.W : (r + 1) * self.W]) + r * self.W
                    m.prune(view, at, beams)
            return ok
        ok = (self._layer_of == self.depth) | ((self._layer_of == self.L) & (self.depth > 0))
        return ok.expand(self.R * self.W, self.S)

    def _final(self, score: float, length: int) -> float:
        return penalised(score, length, self.length_penalty)

    def _bound(self, live: float) -> float:
        return penalised(live, self.L, self.length_penalty)

    def advance(self, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Take one step from masked log-probs [R*W, S] (-inf = not allowed or not known).

        Returns (source row, local token) for the next R*W rows, or None when every request is done.
        """
        R, W, S = self.R, self.W, self.S
        self.stats.steps += 1
        cand = (self.scores.view(-1, 1) + logp).view(R, W * S)
        top_s, top_i = cand.topk(min(2 * W, W * S), dim=1)
        is_end = (top_i % S == self.end) & torch.isfinite(top_s)
        n_end = 0
        for r, j in torch.nonzero(is_end).tolist():
            if self.done[r]:
                continue
            row = r * W + int(top_i[r, j]) // S
            sid = tuple((self.tokens[row] - self._offsets[: self.depth]).tolist())
            node = int(self.nodes[row])
            if node >= 0 and not self.mask.trie.terminal[node]:
                node = INVALID  # unconstrained: ended on a prefix, which is no SID
            self.finished[r].append(Hit(sid, self._final(float(top_s[r, j]), self.depth), node))
            n_end += 1
        self.stats.finished_per_depth[self.depth] = n_end
        if self.depth == self.L:
            return None

        # The best W continuing candidates keep their order among the 2W.
        keep = torch.argsort((top_i % S == self.end).int(), dim=1, stable=True)[:, :W]
        top_s, top_i = top_s.gather(1, keep), top_i.gather(1, keep)
        for r in range(R):
            fin = sorted((h.score for h in self.finished[r]), reverse=True)
            if len(fin) >= self.k and fin[self.k - 1] >= self._bound(float(top_s[r, 0])):
                self.done[r] = True
        top_s[self.done] = NEG
        if not torch.isfinite(top_s).any():
            return None

        src = (torch.arange(R).view(R, 1) * W + top_i // S).view(-1)
        tok = (top_i % S).view(-1)
        prev = self.nodes[src]
        self.nodes = torch.full_like(prev, INVALID)
        ok = (prev >= 0) & torch.isfinite(top_s.view(-1))
        self.nodes[ok] = self.mask.step(prev[ok], tok[ok])
        self.tokens = torch.cat([self.tokens[src], tok.view(-1, 1)], 1)
        self.scores = top_s
        self.depth += 1
        return src, tok

    def results(self) -> list[list[Hit]]:
        return [sorted(f, key=lambda h: -h.score)[: self.k] for f in self.finished]
