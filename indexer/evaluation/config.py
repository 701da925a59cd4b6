"""What one evaluation run compares, and under which shared budget."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.build import METHODS, BuildConfig
from indexer.collab import DEFAULT_VIEWS
from indexer.evaluation.baselines import BASELINES, RulesConfig, SASRecConfig
from indexer.quantizers import QuantizerConfig
from indexer.sarq import SARQConfig
from indexer.split import SplitConfig
from indexer.training.config import TrainConfig
from sidcore.errors import DataError
from sidcore.retriever import FUSED_BEAMS_PER_ITEM, HEAD_PROPOSALS_PER_ITEM


@dataclass(frozen=True)
class EvalConfig:
    """One comparison. Every method shares the quantizer and decoder budgets (sizes, epochs, steps, seed).

    Args:
        methods: indexing methods (``indexer.build.METHODS``).
        budgets: SARQ budgets in nats; each adaptive method runs once per budget. Empty: the
            automatic budget (median head-path information).
        sarq: the rest of the SARQ rule (``max_group``, ...) for the adaptive methods.
        baselines: names in ``BASELINES``.
        ks: cut-offs K; the decoder is asked for ``max(ks)`` items per case.
        quantizer, split, train, sasrec, rules: budgets of the index, head/tail split, decoder,
            SASRec, and the search space of the sequential rules.
        base_model: a local Qwen3 checkpoint every method's decoder starts from (None: the tiny
            Qwen3 of ``train.tiny``).
        collab_weight: weight of the collaborative part of each item's vector (``indexer.collab``)
            in every method's index, when the data has training histories (0: text alone).
        collab_views: what those vectors say (``indexer.collab.VIEWS``).
        exclude_history: leave each case's own history items out of every ranking (generative
            methods and baselines alike), as the service does by default.
        beam_width: the service's default beam; a case asking for more items gets ``max(ks)`` beams.
        length_penalty: SID scores divided by ``(length + 1) ** length_penalty`` on the test
            cases, as the service's setting overrides it; None: each decoder's own, chosen on its
            validation cases (``TrainConfig.length_penalties``), as the service serves by default.
        item_weight: history cases rank their decoded SIDs' items by SID score plus this times
            the decoder's item-head logit, as the service's setting overrides it; None: each
            decoder's own, chosen on its validation cases (``TrainConfig.item_weights``).
        item_prior: the item head's popularity adjustment (``Retriever``), as the service's setting
            overrides it; None: each decoder's own (``TrainConfig.item_priors``).
        fused_beams_per_item: beams per requested item for a case the item head re-ranks, as
            the service's setting (``Retriever``).
        head_proposals_per_item: items the item head proposes per requested item beside the
            beams, for such a case, as the service's setting (``Retriever``).
        batch_size: cases decoded together.
        max_cases: score a seeded sample of this many cases (None: all).
        hallucination_cases: cases decoded with the constraint off (the first ones of the sample).
        hallucination_k: SIDs generated per such case.
        seed: case sampling and the baselines (the quantizer and decoder carry their own seeds).
    """

    methods: tuple[str, ...] = ("rq-kmeans", "rq-vae", "acrq", "sarq", "sa2crq")
    budgets: tuple[float, ...] = ()
    sarq: SARQConfig = field(default_factory=SARQConfig)
    baselines: tuple[str, ...] = ("popularity", "bm25", "dense", "rules", "sasrec")
    ks: tuple[int, ...] = (1, 5, 10, 20, 100)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    base_model: Path | None = None
    collab_weight: float = 1.0
    collab_views: tuple[str, ...] = DEFAULT_VIEWS
    exclude_history: bool = True
    beam_width: int = 20
    length_penalty: float | None = None
    item_weight: float | None = None
    item_prior: float | None = None
    fused_beams_per_item: int = FUSED_BEAMS_PER_ITEM
    head_proposals_per_item: int = HEAD_PROPOSALS_PER_ITEM
    batch_size: int = 32
    max_cases: int | None = None
    hallucination_cases: int = 500
    hallucination_k: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise DataError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise DataError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
        if not self.methods and not self.baselines:
            raise DataError("nothing to evaluate: no methods and no baselines")
        if not self.ks or any(k < 1 for k in self.ks):
            raise DataError(f"cut-offs K must be positive integers, got {self.ks}")
        if any(not (np.isfinite(b) and b >= 0) for b in self.budgets):
            raise DataError(f"budgets must be finite non-negative numbers of nats, got {self.budgets}")
        if self.budgets and not any(METHODS[m][1] for m in self.methods):
            raise DataError("--budgets applies to sarq and sa2crq, and neither is among the methods")
        if self.fused_beams_per_item < 1:
            raise DataError(f"fused_beams_per_item must be >= 1, got {self.fused_beams_per_item}")
        if self.head_proposals_per_item < 0:
            raise DataError(f"head_proposals_per_item must be >= 0, got {self.head_proposals_per_item}")
        if self.beam_width < 1 or self.batch_size < 1 or self.hallucination_k < 1 or self.hallucination_cases < 0:
            raise DataError("beam_width, batch_size and hallucination_k must be positive")
        if self.length_penalty is not None and not 0 <= self.length_penalty < float("inf"):
            raise DataError(f"length_penalty must be a finite number >= 0, got {self.length_penalty}")
        if self.item_weight is not None and not 0 <= self.item_weight < float("inf"):
            raise DataError(f"item_weight must be a finite number >= 0, got {self.item_weight}")
        if self.item_prior is not None and not 0 <= self.item_prior < float("inf"):
            raise DataError(f"item_prior must be a finite number >= 0, got {self.item_prior}")
        if self.max_cases is not None and self.max_cases < 1:
            raise DataError("max_cases must be positive")
        object.__setattr__(self, "ks", tuple(sorted(set(self.ks))))

    @property
    def max_k(self) -> int:
        return max(self.ks)

    def runs(self) -> list[tuple[str, BuildConfig]]:
        """(run name, index config) per method, and per budget for the SARQ methods."""
        out = []
        for m in self.methods:
            budgets = self.budgets if METHODS[m][1] and self.budgets else (None,)
            for b in budgets:
                name = m if b is None else f"{m}@{b:g}"
                out.append((name, BuildConfig(method=m, quantizer=self.quantizer, sarq=dataclasses.replace(self.sarq, budget=b), split=self.split,
                                              collab_weight=self.collab_weight, collab_views=self.collab_views)))
        return out

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "base_model": str(self.base_model) if self.base_model else None}
