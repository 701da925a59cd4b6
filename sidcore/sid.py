"""Semantic IDs: their text form, and items grouped by SID (collisions kept, ranked by popularity).

A SID is a tuple of 1..L codes, code ``c_l`` in ``[0, M_l)`` at layer ``l``, printed as ``12-301-7``.
``format_sid``/``parse_sid`` are the one place that text form is written and read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sidcore.errors import DataError

SID = tuple[int, ...]


def format_sid(sid: Sequence[int] | np.ndarray) -> str:
    return "-".join(str(int(c)) for c in sid)


def format_sids(codes: np.ndarray, lengths: np.ndarray) -> list[str]:
    """``format_sid`` of every row of ``codes`` (N x L) cut at ``lengths``; one length at a time,
    since a per-row call is ~10x slower on millions of SIDs."""
    out = np.empty(len(lengths), dtype=object)
    for n in np.unique(lengths):
        rows = np.flatnonzero(lengths == n)
        out[rows] = list(map("-".join(["{}"] * int(n)).format, *codes[rows, :n].T.tolist()))
    return out.tolist()


def parse_sid(text: str) -> SID:
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
