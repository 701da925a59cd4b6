"""The constrained-decoding kernel shared by the torch engine, the vLLM engine and evaluation.

SID tokens occupy one contiguous block of the decoder vocabulary (``sidcore.decoder.vocab.SIDVocab``):
layer 0's codes, then layer 1's, ..., then ``<sid_end>``. Kernels work in *local* ids, ``token - base``,
in ``[0, num_local)``. ``TrieMask`` answers, for a batch of beams sitting at trie nodes, which local
ids may come next (``allowed``) and which node each chosen token leads to (``step``), as a handful
of batched tensor ops with no per-beam Python, on whatever device its tensors live on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from sidcore.decoder.vocab import SIDVocab
from sidcore.errors import DataError
from sidcore.index.trie import Trie

DENSE_ROWS_BYTES = 32 << 20
"""At most this much memory for precomputed mask rows of high fan-out nodes."""
INVALID = -1
"""``step`` result: the token is not a continuation of that node."""
FINISHED = -2
"""``step`` result: ``<sid_end>`` at a terminal node; the beam's SID is complete."""


class TrieMask:
    """Allowed continuations and transitions of beams on a ``Trie``, on CPU or CUDA.

    Every node owns a block of *moves*: one per child (its SID token) plus ``<sid_end>`` if the
    node is terminal. Moves are keyed ``node * num_local + local`` and stored node after node,
    each block in local-id order (children are sorted by code, ``<sid_end>`` is the last local
    id), so the keys are globally ascending: ``step`` is one searchsorted over all moves and
    ``allowed`` writes each beam's block into its mask row. Nodes with many moves (the root and
    popular prefixes, where beams spend the first steps) get a precomputed mask row, copied;
    ``dense_min`` sets the threshold, within a ``DENSE_ROWS_BYTES`` budget. The other nodes' moves
    are written through a fixed-width window over their blocks (width = their largest block), so
    the torch kernel needs no host sync at all.

    On CPU the kernels run in numpy over zero-copy views of the tensors, because torch's
    per-op dispatch (~5 us) would dominate these tiny batched ops; elsewhere they are the same
    ops in torch (``backend="torch"`` forces that path on CPU too, e.g. to test it).
    Node arguments must be real nodes (>= 0): beams that ``step`` returned ``FINISHED`` or
    ``INVALID`` for are retired by the caller.
    """

    root = Trie.ROOT

    def __init__(
        self, trie: Trie, vocab: SIDVocab, device: str | torch.device = "cpu", backend: str = "auto", dense_min: int = 64
    ):
        if vocab.sizes != trie.sizes:
            raise DataError(f"vocabulary sizes {vocab.sizes} differ from the index's {trie.sizes}")
        self.trie = trie
        self.vocab = vocab
        self.device = torch.device(device)
        if backend == "auto":
            backend = "numpy" if self.device.type == "cpu" else "torch"
        if backend not in ("numpy", "torch") or (backend == "numpy" and self.device.type != "cpu"):
            raise DataError(f"backend must be 'torch', or 'numpy' on CPU; got {backend!r} on {self.device}")
        self.backend = backend
        self.num_local = vocab.num_local
        self.end = vocab.end_local

        n = trie.num_nodes
        child_count = np.diff(trie.child_start)
        count = child_count + trie.terminal
        start = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
        key = np.empty(int(start[-1]), dtype=np.int64)
        target = np.empty(int(start[-1]), dtype=np.int64)
        edge_parent = np.repeat(np.arange(n, dtype=np.int64), child_count)
        at = start[edge_parent] + np.arange(len(edge_parent)) - trie.child_start[edge_parent]
        # A child of a depth-d node carries a layer-d code: local id offsets[d] + code.
        key[at] = edge_parent * self.num_local + np.asarray(vocab.offsets, dtype=np.int64)[trie.depth[edge_parent]] + trie.child_code
        target[at] = trie.child_node
        ends = np.flatnonzero(trie.terminal)
        at = start[ends] + child_count[ends]
        key[at] = ends * self.num_local + self.end
        target[at] = FINISHED

        dense = np.flatnonzero(count >= dense_min)
        budget = DENSE_ROWS_BYTES // self.num_local
        if len(dense) > budget:
            dense = np.sort(dense[np.argsort(-count[dense], kind="stable")[:budget]])
        row_of = np.zeros(n, dtype=np.int64)  # row 0 is all False: nodes without a dense row
        row_of[dense] = np.arange(1, len(dense) + 1)
        rows = np.zeros((len(dense) + 1, self.num_local), dtype=bool)
        owner = np.repeat(np.arange(n, dtype=np.int64), count)
        local = key - owner * self.num_local
        in_dense = row_of[owner] > 0
        rows[row_of[owner[in_dense]], local[in_dense]] = True
        sparse_count = np.where(row_of > 0, 0, count)
        width = int(sparse_count.max(initial=0))
        # Padding keeps every window and every searchsorted hit in bounds; the sentinel key matches nothing.
        local = np.concatenate([local, np.zeros(width, dtype=np.int64)])
        key = np.concatenate([key, [np.iinfo(np.int64).max]])
        target = np.concatenate([target, [INVALID]])

        # Kept as numpy whatever the backend: per-request item masks work on them (``moves``).
        self._blocks = (start[:-1], count.astype(np.int64), local[: len(target) - 1], target[:-1])
        tables = (start[:-1], sparse_count, local, np.arange(width), key, target, row_of, rows)
        if backend == "torch":
            tables = tuple(torch.tensor(t, device=self.device) for t in tables)
        self._start, self._sparse_count, self._local, self._window, self._key, self._target, self._row_of, self._rows = tables

    def allowed(self, nodes: torch.Tensor) -> torch.Tensor:
        """Bool [B, num_local]: each beam's children's SID tokens, plus ``<sid_end>`` at terminal nodes."""
        if self.backend == "numpy":
            return torch.from_numpy(self._allowed_np(nodes.numpy()))
        mask = self._rows.index_select(0, self._row_of[nodes])
        cols = self._local[self._start[nodes][:, None] + self._window]
        # Window slots past a node's block repeat its first move (every node has one, and a dense
        # row already holds it), so writing them is harmless.
        cols = torch.where(self._window < self._sparse_count[nodes][:, None], cols, cols[:, :1])
        return mask.scatter_(1, cols, True)

    def _allowed_np(self, nodes: np.ndarray) -> np.ndarray:
        mask = self._rows[self._row_of[nodes]]
        count = self._sparse_count[nodes]
        width = int(count.max(initial=0))  # usually well below the table's width
        if width:
            window = self._window[:width]
            cols = self._local[self._start[nodes][:, None] + window]
            cols = np.where(window < count[:, None], cols, cols[:, :1])
            np.put_along_axis(mask, cols, True, axis=1)
        return mask

    def step(self, nodes: torch.Tensor, local_tokens: torch.Tensor) -> torch.Tensor:
        """Long [B]: the child each beam reaches with its token, ``FINISHED`` after ``<sid_end>`` at a
        terminal node, ``INVALID`` for anything not allowed."""
        if self.backend == "numpy":
            return torch.from_numpy(self._step_np(nodes.numpy(), local_tokens.numpy()))
        query = nodes * self.num_local + local_tokens
        idx = torch.searchsorted(self._key, query)
        return torch.where(self._key[idx] == query, self._target[idx], INVALID)

    def _step_np(self, nodes: np.ndarray, local_tokens: np.ndarray) -> np.ndarray:
        query = nodes * self.num_local + local_tokens
        idx = np.searchsorted(self._key, query)
        return np.where(self._key[idx] == query, self._target[idx], INVALID)

    @cached_property
    def moves(self) -> "MoveTable":
        """The moves as flat numpy arrays with their inverse links (built on first use)."""
        start, count, local, target = self._blocks
        return MoveTable.build(self.trie, start, count, local, target)

    def sid(self, node: int) -> tuple[int, ...]:
        return self.trie.sid_of(node)

    def items(self, node: int) -> list[str]:
        return self.trie.items_of(node)



@dataclass(frozen=True, eq=False)
class MoveTable:
    """A trie's decode moves in flat arrays, ``TrieMask``'s layout with links both ways.

    Node ``n``'s moves are ``start[n] : start[n] + count[n]``: one per child in code order, then
    ``<sid_end>`` if ``n`` is terminal. Every node has at least one move.
    """

    start: np.ndarray  # int64 [N], first move of each node
    count: np.ndarray  # int64 [N], moves of each node
    local: np.ndarray  # int64 [M], local token id of each move
    target: np.ndarray  # int64 [M], the child a move leads to, FINISHED for <sid_end>
    move_in: np.ndarray  # int64 [N], the move leading into each node (-1 at the root)
    end_move: np.ndarray  # int64 [N], each node's <sid_end> move (-1 if not terminal)
    by_depth: tuple[np.ndarray, ...]  # int64 nodes of depth 0, 1, ..., L
    parent: np.ndarray  # int32 [N], the trie's
    depth: np.ndarray  # int8 [N], the trie's
    item_node: np.ndarray  # int32 [I], the trie's: terminal node of each item row

    @classmethod
    def build(cls, trie: Trie, start: np.ndarray, count: np.ndarray, local: np.ndarray, target: np.ndarray) -> "MoveTable":
        n = trie.num_nodes
        move_in = np.full(n, -1, dtype=np.int64)
        child = np.flatnonzero(target >= 0)
        move_in[target[child]] = child
        end_move = np.full(n, -1, dtype=np.int64)
        terminal = np.flatnonzero(trie.terminal)
        end_move[terminal] = start[terminal] + count[terminal] - 1  # <sid_end> is a block's last move
        order = np.argsort(trie.depth, kind="stable")
        bounds = np.searchsorted(trie.depth[order], np.arange(len(trie.sizes) + 2))
        by_depth = tuple(order[bounds[d] : bounds[d + 1]].astype(np.int64) for d in range(len(trie.sizes) + 1))
        return cls(start, count, local, target, move_in, end_move, by_depth, trie.parent, trie.depth, trie.item_node)

    @property
    def num_moves(self) -> int:
        return len(self.target)
