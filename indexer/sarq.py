"""SARQ: variable-length SIDs by path self-information.

Path priors are smoothed conditional code frequencies counted over head items:

    P(c_1)           = (n(c_1) + a) / (N + a * M_1)
    P(c_l | c_<l)    = (n(c_1..c_l) + a) / (n(c_1..c_{l-1}) + a * M_l)

and the self-information of a prefix is I_l = -sum_{i<=l} log P(c_i | c_<i) (nats). An item's SID
stops at the first layer l >= ``min_length`` whose prefix information exceeds the budget:
dense paths (low information) run to full depth and become discriminative, sparse paths (tail,
cold start) stop early and share short IDs. ``direction="dense-shorter"`` flips the test, giving
popular, dense regions the short IDs instead.

``max_group`` bounds how much a short ID is shared: a prefix that more than ``max_group`` catalog
items pass through is no stopping point, so no truncated SID ever holds more items than that. On a
corpus whose tail items are each some query's exact answer (scifact), unbounded sharing put 5,183
documents on 3,394 SIDs and cost Recall@10 (docs/evaluation.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sidcore.errors import DataError


@dataclass(frozen=True)
class SARQConfig:
    """Truncation rule.

    Args:
        budget: nats; one value for every checked layer, or one per checked prefix length
            ``min_length .. L-1``. ``None`` calibrates on the head paths: at each checked layer
            the budget is the ``auto_quantile`` quantile of head items' prefix information, so
            that share of head paths runs deeper whatever the catalog size and codebook sizes.
        min_length: shortest SID (the paper checks from layer 2).
        direction: ``dense-longer`` (the paper's) or ``dense-shorter``.
        smoothing: additive constant ``a`` of the priors.
        auto_quantile: see ``budget``.
        max_group: the most catalog items a truncated SID may hold (None: no bound, the paper's
            rule). Counted on the codes of the catalog the index is built from (cold-start
            inserts are checked against those counts until the next build).
    """

    budget: float | tuple[float, ...] | None = None
    min_length: int = 2
    direction: Literal["dense-longer", "dense-shorter"] = "dense-longer"
    smoothing: float = 0.1
    auto_quantile: float = 0.5
    max_group: int | None = None

    def __post_init__(self) -> None:
        if self.direction not in ("dense-longer", "dense-shorter"):
            raise DataError(f"direction must be 'dense-longer' or 'dense-shorter', got {self.direction!r}")
        if self.min_length < 1:
            raise DataError("min_length must be >= 1")
        if self.smoothing <= 0 or not 0.0 < self.auto_quantile < 1.0:
            raise DataError("smoothing must be positive and auto_quantile in (0, 1)")
        if self.max_group is not None and self.max_group < 1:
            raise DataError(f"max_group must be >= 1, got {self.max_group}")
        budgets = self.budget if isinstance(self.budget, tuple) else (self.budget,)
        for b in budgets:
            if b is not None and not (math.isfinite(b) and b >= 0):
                raise DataError(f"budget must be a finite non-negative number of nats, got {b}")

    def budgets(self, num_layers: int, head_info: np.ndarray) -> np.ndarray:
        """Budget per checked prefix length ``min_length .. L-1``; ``head_info`` is the head
        items' prefix information (N_head x L), used only to calibrate the default."""
        checked = max(0, num_layers - self.min_length)
        if self.budget is None:
            if not len(head_info):
                return np.full(checked, np.inf)
            return np.quantile(head_info[:, self.min_length - 1 : num_layers - 1], self.auto_quantile, axis=0)
        if isinstance(self.budget, tuple):
            if len(self.budget) != checked:
                raise DataError(
                    f"{len(self.budget)} budgets given but {checked} layers are checked "
                    f"(prefix lengths {self.min_length}..{num_layers - 1})"
                )
            return np.asarray(self.budget, dtype=np.float64)
        return np.full(checked, float(self.budget))


def _prefix_keys(codes: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Mixed-radix key of every prefix: column l identifies (c_1..c_{l+1})."""
    keys = np.empty(codes.shape, dtype=np.int64)
    acc = np.zeros(len(codes), dtype=np.int64)
    for layer, m in enumerate(sizes):
        acc = acc * m + codes[:, layer]
        keys[:, layer] = acc
    return keys


class PathPriors:
    """Smoothed path probability tables, stored sparsely as sorted (prefix key, count) pairs."""

    def __init__(self, sizes: tuple[int, ...], smoothing: float, total: int, keys: list[np.ndarray], counts: list[np.ndarray]):
        self.sizes = tuple(int(m) for m in sizes)
        self.smoothing = float(smoothing)
        self.total = int(total)
        self.keys = keys
        self.counts = counts

    @classmethod
    def fit(cls, codes: np.ndarray, sizes: tuple[int, ...], smoothing: float) -> "PathPriors":
        if math.prod(sizes) >= 2**62:
            raise DataError(f"codebook sizes {sizes} are too large to key paths in 64 bits")
        prefix = _prefix_keys(np.asarray(codes, dtype=np.int64), sizes)
        keys, counts = [], []
        for layer in range(len(sizes)):
            k, c = np.unique(prefix[:, layer], return_counts=True)
            keys.append(k)
            counts.append(c.astype(np.int64))
        return cls(sizes, smoothing, len(codes), keys, counts)

    def _count(self, layer: int, key: np.ndarray) -> np.ndarray:
        table = self.keys[layer]
        pos = np.clip(np.searchsorted(table, key), 0, max(len(table) - 1, 0))
        if len(table) == 0:
            return np.zeros(len(key), dtype=np.int64)
        return np.where(table[pos] == key, self.counts[layer][pos], 0)

    def prefix_counts(self, codes: np.ndarray) -> np.ndarray:
        """n(c_1..c_l): how many of the fitted paths pass through each item's prefixes, shape (N, L)."""
        prefix = _prefix_keys(np.asarray(codes, dtype=np.int64), self.sizes)
        return np.stack([self._count(layer, prefix[:, layer]) for layer in range(len(self.sizes))], axis=1)

    def log_probs(self, codes: np.ndarray) -> np.ndarray:
        """log P(c_l | c_<l) for every item and layer, shape (N, L)."""
        codes = np.asarray(codes, dtype=np.int64)
        prefix = _prefix_keys(codes, self.sizes)
        a = self.smoothing
        out = np.empty(codes.shape, dtype=np.float64)
        parent = np.full(len(codes), self.total, dtype=np.float64)
        for layer, m in enumerate(self.sizes):
            n = self._count(layer, prefix[:, layer]).astype(np.float64)
            out[:, layer] = np.log((n + a) / (parent + a * m))
            parent = n
        return out

    def prefix_information(self, codes: np.ndarray) -> np.ndarray:
        """I_l = -sum_{i<=l} log P(c_i | c_<i), shape (N, L)."""
        return -np.cumsum(self.log_probs(codes), axis=1)

    def state(self) -> dict[str, np.ndarray]:
        out = {
            "sizes": np.asarray(self.sizes, dtype=np.int64),
            "smoothing": np.asarray([self.smoothing]),
            "total": np.asarray([self.total]),
        }
        for layer in range(len(self.sizes)):
            out[f"keys_{layer}"] = self.keys[layer]
            out[f"counts_{layer}"] = self.counts[layer]
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "PathPriors":
        sizes = tuple(int(m) for m in state["sizes"])
        return cls(
            sizes,
            float(state["smoothing"][0]),
            int(state["total"][0]),
            [state[f"keys_{i}"] for i in range(len(sizes))],
            [state[f"counts_{i}"] for i in range(len(sizes))],
        )


def truncate(info: np.ndarray, budgets: np.ndarray, cfg: SARQConfig, through: np.ndarray | None = None) -> np.ndarray:
    """SID length per item from prefix information (N, L) and per-checked-layer budgets.

    ``through`` (N, L): catalog items passing through each prefix (``PathPriors.prefix_counts``
    over the catalog's codes); with ``cfg.max_group`` a prefix holding more is no stopping point.
    """
    n, num_layers = info.shape
    lengths = np.full(n, num_layers, dtype=np.int64)
    if num_layers <= cfg.min_length:
        return lengths
    checked = info[:, cfg.min_length - 1 : num_layers - 1]  # prefixes of length min_length..L-1
    stop = checked > budgets[None, :] if cfg.direction == "dense-longer" else checked <= budgets[None, :]
    if cfg.max_group is not None and through is not None:
        stop &= through[:, cfg.min_length - 1 : num_layers - 1] <= cfg.max_group
    any_stop = stop.any(axis=1)
    lengths[any_stop] = cfg.min_length + np.argmax(stop[any_stop], axis=1)
    return lengths
