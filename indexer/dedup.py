"""TIGER's fix for colliding fixed-length SIDs: a suffix layer numbering the items of each SID."""

from __future__ import annotations

import numpy as np

from sidcore.errors import DataError
from sidcore.sid import SIDTable


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
