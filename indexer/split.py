"""Head/tail split by popularity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sidcore.errors import DataError


@dataclass(frozen=True)
class SplitConfig:
    """Which items are "head".

    Args:
        by: ``interactions``: the most popular items that together hold ``head_share`` of all
            interactions (the paper's notion: a few items carry most traffic); ``items``: the top
            ``head_share`` fraction of items by popularity.
        head_share: in (0, 1].
    """

    by: Literal["interactions", "items"] = "interactions"
    head_share: float = 0.8

    def __post_init__(self) -> None:
        if self.by not in ("interactions", "items"):
            raise DataError(f"split 'by' must be 'interactions' or 'items', got {self.by!r}")
        if not 0.0 < self.head_share <= 1.0:
            raise DataError(f"head_share must be in (0, 1], got {self.head_share}")


def head_mask(popularity: np.ndarray, cfg: SplitConfig = SplitConfig()) -> np.ndarray:
    """Boolean mask of head items. Ties break by catalog order; without popularity all are head."""
    pop = np.asarray(popularity, dtype=np.float64)
    n = len(pop)
    total = pop.sum()
    if total <= 0:
        return np.ones(n, dtype=bool)
    order = np.argsort(-pop, kind="stable")
    if cfg.by == "items":
        n_head = max(1, math.ceil(cfg.head_share * n))
    else:
        cum = np.cumsum(pop[order]) / total
        n_head = int(np.searchsorted(cum, cfg.head_share - 1e-12) + 1)
    mask = np.zeros(n, dtype=bool)
    mask[order[:n_head]] = True
    mask &= pop > 0  # an item nobody touched is tail whatever the share
    return mask
