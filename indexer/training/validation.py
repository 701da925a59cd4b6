"""Model selection: Recall@k of a decoder being trained, on held-out validation examples, through
the service's own pipeline (``sidcore.retriever.Retriever`` on the torch engine), so the number
that picks the epoch is the number the service would score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from indexer.evaluation.metrics import mrr_at, recall_at
from indexer.training.examples import Example
from sidcore.decoder.bundle import Decoder
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index.mask import TrieMask
from sidcore.index.trie import Trie
from sidcore.retriever import HEAD_PROPOSALS_PER_ITEM, Query, Retriever


def sample_cases(cases: list[Example], n: int, seed: int) -> list[Example]:
    """Up to ``n`` of ``cases``, a seeded sample in their original order: the cases model selection scores."""
    return [cases[i] for i in np.sort(np.random.default_rng(seed).permutation(len(cases))[:n])]


def first_best(candidates: Sequence[float], scores: dict[float, tuple[float, ...]]) -> float:
    """The candidate whose ``scores`` tuple is highest (compared in order: a later score breaks the
    ties of an earlier one), the earliest among equals."""
    return max(candidates, key=lambda c: (*scores[c], -candidates.index(c)))


@dataclass(frozen=True)
class Validation:
    """``cases`` validation examples scored at Recall@``k`` with ``beam_width`` beams, ``batch`` at a
    time; a re-ranked case also takes the item head's proposals, as the service does by default."""

    cases: list[Example]
    k: int = 10
    beam_width: int = 20
    batch: int = 32
    head_proposals_per_item: int = HEAD_PROPOSALS_PER_ITEM

    def recall(self, decoder: Decoder, trie: Trie, length_penalty: float | None = None, item_weight: float | None = None) -> float:
        """Recall@k. ``length_penalty``, ``item_weight``: None scores as the decoder's spec says
        (plain SID sums while it trains)."""
        return self.measure(decoder, trie, length_penalty, item_weight)[0]

    def measure(self, decoder: Decoder, trie: Trie, length_penalty: float | None = None,
                item_weight: float | None = None) -> tuple[float, float]:
        """(Recall@k, MRR@k): MRR tells apart settings that place the same targets in the top k,
        which ~60 validation claims often do."""
        weight = decoder.spec.item_weight if item_weight is None else item_weight
        return self.measure_weights(decoder, trie, length_penalty, [weight])[weight]

    def measure_weights(self, decoder: Decoder, trie: Trie, length_penalty: float | None,
                        item_weights: Sequence[float], item_prior: float | None = None) -> dict[float, tuple[float, float]]:
        """``measure`` at each item weight. The positive weights plan the same beams, so they share
        one decode and differ only in how the head re-ranks its items (each weight alone gives the
        same figures); weight 0 decodes on its own, as a request the head does not re-rank would.
        ``item_prior``: the head's popularity adjustment (``Retriever``; None: the decoder's own)."""
        out = {}
        if 0 in item_weights:
            out[0.0] = self._measure(decoder, trie, length_penalty, [0.0], item_prior)[0]
        positive = [w for w in item_weights if w > 0]
        if positive:
            out.update(zip(positive, self._measure(decoder, trie, length_penalty, positive, item_prior)))
        return {w: out[w] for w in item_weights}

    def _measure(self, decoder: Decoder, trie: Trie, length_penalty: float | None,
                 item_weights: list[float], item_prior: float | None = None) -> list[tuple[float, float]]:
        if not self.cases:
            return [(0.0, 0.0)] * len(item_weights)
        engine = TorchEngine(decoder, TrieMask(trie, decoder.spec.vocab), length_penalty=length_penalty)
        retriever = Retriever(decoder, engine, beam_width=self.beam_width,
                              max_beam_width=max(self.beam_width, self.k), item_weight=item_weights[0],
                              head_proposals_per_item=self.head_proposals_per_item, item_prior=item_prior)
        hits, reciprocal = np.zeros(len(item_weights)), np.zeros(len(item_weights))
        for i in range(0, len(self.cases), self.batch):
            chunk = self.cases[i : i + self.batch]
            decoded = retriever.decode(trie, [Query(c.query, c.history, k=self.k) for c in chunk])
            for j, w in enumerate(item_weights):
                for c, r in zip(chunk, retriever.rank(decoded, w)):
                    ranked = [h.item_id for h in r.items]
                    hits[j] += recall_at(ranked, {c.target}, self.k)
                    reciprocal[j] += mrr_at(ranked, {c.target}, self.k)
        return [(hits[j] / len(self.cases), reciprocal[j] / len(self.cases)) for j in range(len(item_weights))]
