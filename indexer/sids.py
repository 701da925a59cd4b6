"""Semantic IDs: from (codes, lengths) to SID groups, collisions kept and ranked by popularity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from indexer.data.catalog import DataError


def format_sid(sid: tuple[int, ...] | np.ndarray) -> str:
    return "-".join(str(int(c)) for c in sid)


def parse_sid(text: str) -> tuple[int, ...]:
    try:
        sid = tuple(int(c) for c in text.split("-"))
    except ValueError:
        raise DataError(f"not a SID: {text!r} (expected codes joined by '-', e.g. 12-301-7)") from None
    if not sid or any(c < 0 for c in sid):
        raise DataError(f"not a SID: {text!r}")
    return sid


def sid_keys(codes: np.ndarray, lengths: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """One int64 per SID: mixed radix over (code + 1), with 0 marking layers past the end.

    Keys sort prefixes before their extensions, and equal keys mean equal SIDs.
    """
    if math.prod(m + 1 for m in sizes) >= 2**63:
        raise DataError(f"codebook sizes {sizes} are too large to key SIDs in 64 bits")
    keys = np.zeros(len(codes), dtype=np.int64)
    for layer, m in enumerate(sizes):
        digit = np.where(lengths > layer, codes[:, layer] + 1, 0)
        keys = keys * (m + 1) + digit
    return keys


@dataclass(frozen=True)
class SIDTable:
    """Items grouped by SID.

    ``order`` lists item indices grouped by SID (groups sorted by key), most popular first within
    a group; group ``g`` is ``order[starts[g]:starts[g + 1]]``; ``group_of[i]`` is item i's group.
    """

    codes: np.ndarray
    lengths: np.ndarray
    sizes: tuple[int, ...]
    order: np.ndarray
    starts: np.ndarray
    group_of: np.ndarray

    @classmethod
    def build(cls, codes: np.ndarray, lengths: np.ndarray, sizes: tuple[int, ...], popularity: np.ndarray) -> "SIDTable":
        keys = sid_keys(codes, lengths, sizes)
        order = np.lexsort((np.arange(len(keys)), -np.asarray(popularity, dtype=np.float64), keys))
        sorted_keys = keys[order]
        boundary = np.flatnonzero(np.diff(sorted_keys)) + 1
        starts = np.concatenate([[0], boundary, [len(keys)]]).astype(np.int64)
        group_sorted = np.zeros(len(keys), dtype=np.int64)
        group_sorted[boundary] = 1
        group_of = np.empty(len(keys), dtype=np.int64)
        group_of[order] = np.cumsum(group_sorted)
        return cls(codes, lengths, tuple(sizes), order, starts, group_of)

    @property
    def num_sids(self) -> int:
        return len(self.starts) - 1

    @property
    def group_sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def sid_of(self, item: int) -> tuple[int, ...]:
        return tuple(int(c) for c in self.codes[item, : self.lengths[item]])

    def items_of_group(self, group: int) -> np.ndarray:
        return self.order[self.starts[group] : self.starts[group + 1]]


def dedup_suffix(codes: np.ndarray, lengths: np.ndarray, sizes: tuple[int, ...], popularity: np.ndarray):
    """TIGER's fix for fixed-length IDs: append each item's rank inside its collision group.

    Returns (codes, lengths, sizes) with one more layer of size = the largest group.
    """
    if np.any(lengths != len(sizes)):
        raise DataError("the dedup suffix is for fixed-length SIDs; SARQ already resolves density")
    table = SIDTable.build(codes, lengths, sizes, popularity)
    rank = np.empty(len(codes), dtype=np.int64)
    rank[table.order] = np.arange(len(codes)) - table.starts[table.group_of[table.order]]
    width = int(table.group_sizes.max())
    return np.column_stack([codes, rank]), lengths + 1, (*sizes, width)
