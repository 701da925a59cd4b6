"""Per-request item masks: which items a request may return, and what that prunes from the decode.

A request may exclude items (its history, ``exclude_ids``) and filter them by attribute. An
``ItemMask`` says which item rows of a trie snapshot remain and, from that, which moves of the
decode (a child's code, or ``<sid_end>``) still lead to a remaining item: a SID whose items are
all gone loses its ``<sid_end>``, a prefix whose whole subtree is gone loses its code.
``BeamSearch.allowed()`` applies it on top of ``TrieMask.allowed()`` (``prune``), so no beam is
spent on a dead SID and k items come back whenever the index holds them; the ``Retriever`` lists
only a SID's remaining items (``items``). Scores do not change: engines take the log-softmax over
the whole SID range before masking, so a pruned decode ranks the surviving SIDs exactly as the
unpruned one does.

Two ways to make one, both vectorised over numpy arrays:

- ``ItemMask.of_rows(moves, rows)``: from a Bool over all item rows (a filter's result), in
  O(items + nodes + moves), some tens of ms on a 1M-item trie; the retriever caches them per
  (snapshot, filter).
- ``mask.excluding(rows)``: a few hundred excluded rows (a history) on top of such a mask, in
  O(excluded x depth). The result keeps its changes as small sorted overlays, so nothing of the
  trie's size is copied per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sidcore.index.mask import MoveTable
from sidcore.index.trie import Trie


def _none() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _in_sorted(x: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Bool like ``x``: which entries occur in ``sorted_values`` (ascending, non-empty)."""
    at = np.minimum(np.searchsorted(sorted_values, x), len(sorted_values) - 1)
    return sorted_values[at] == x


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])`` without the loop."""
    total = int(counts.sum())
    first = np.cumsum(counts) - counts
    return np.arange(total) + np.repeat(starts - first, counts)


@dataclass(frozen=True, eq=False)
class ItemMask:
    """The item rows a request may return on one trie snapshot, and the decode moves left to them.

    ``rows``, ``live_moves``, ``ends`` and ``live`` describe a base set of rows (everything, or a
    filter's); ``excluded``, ``dead`` and ``touched`` are the request's exclusions on top of it.
    """

    moves: MoveTable
    rows: np.ndarray  # bool [I]: rows in the base set
    live_moves: np.ndarray  # bool [M]: moves leading to a base row
    ends: np.ndarray  # int64 [N]: base rows whose SID ends at each node
    live: np.ndarray  # int64 [N]: live moves of each node in the base set
    excluded: np.ndarray = field(default_factory=_none)  # int64, ascending: base rows the request excludes
    dead: np.ndarray = field(default_factory=_none)  # int64, ascending: moves those exclusions prune
    touched: np.ndarray = field(default_factory=_none)  # int64, ascending: nodes owning a move in ``dead``
    empty: bool = False  # no row remains

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def everything(cls, moves: MoveTable) -> "ItemMask":
        """Every item row: nothing pruned (the base of requests with exclusions but no filter)."""
        num_rows = len(moves.item_node)
        ends = np.bincount(moves.item_node, minlength=len(moves.start)).astype(np.int64)
        return cls(moves, np.ones(num_rows, dtype=bool), np.ones(moves.num_moves, dtype=bool), ends, moves.count, empty=num_rows == 0)

    @classmethod
    def of_rows(cls, moves: MoveTable, rows: np.ndarray) -> "ItemMask":
        """The rows where ``rows`` (Bool [I]) is True, with every move that leads to none pruned."""
        n = len(moves.start)
        ends = np.bincount(moves.item_node[rows], minlength=n).astype(np.int64)
        alive = ends > 0  # the node's subtree holds a row; filled in bottom-up below
        for nodes in reversed(moves.by_depth[1:]):
            up = nodes[alive[nodes]]
            alive[moves.parent[up]] = True
        live_moves = np.zeros(moves.num_moves, dtype=bool)
        live_moves[moves.move_in[1:]] = alive[1:]
        terminal = np.flatnonzero(moves.end_move >= 0)
        live_moves[moves.end_move[terminal]] = ends[terminal] > 0
        live = np.bincount(moves.parent[1:][alive[1:]], minlength=n).astype(np.int64) + (ends > 0)
        return cls(moves, np.asarray(rows, dtype=bool), live_moves, ends, live, empty=not alive[0])

    def excluding(self, rows: np.ndarray) -> "ItemMask":
        """This mask less the item ``rows`` (int, any order, duplicates and rows already out allowed).

        Removing a SID's last row kills its ``<sid_end>``; a node left with no live move dies and
        its parent loses the move into it, up to the root. Deepest nodes first, so each node's
        losses are all known when it is settled.
        """
        if self.excluded.size:
            raise ValueError("excluding() applies to a mask without exclusions")
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        rows = rows[self.rows[rows]]
        if not rows.size:
            return self
        m = self.moves
        nodes, removed = np.unique(m.item_node[rows], return_counts=True)
        emptied = nodes[self.ends[nodes] == removed]
        dead, died = [m.end_move[emptied]], []
        losing = emptied  # one entry per move a node loses
        for d in range(len(m.by_depth) - 1, 0, -1):
            here = m.depth[losing] == d
            nodes, lost = np.unique(losing[here], return_counts=True)
            died.append(nodes[self.live[nodes] == lost])
            dead.append(m.move_in[died[-1]])
            losing = np.concatenate([losing[~here], m.parent[died[-1]].astype(np.int64)])
        empty = bool(len(losing) >= self.live[0])  # only the root's losses are left
        parents = m.parent[np.concatenate(died)].astype(np.int64)
        touched = np.unique(np.concatenate([emptied, parents]))
        return ItemMask(m, self.rows, self.live_moves, self.ends, self.live, rows, np.sort(np.concatenate(dead)), touched, empty)

    # -- use ----------------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        """Rows that remain."""
        return int(np.count_nonzero(self.rows)) - len(self.excluded)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.rows, self.live_moves, self.ends, self.live, self.excluded, self.dead, self.touched))

    def prune(self, allowed: np.ndarray, nodes: np.ndarray, beams: np.ndarray) -> None:
        """In place: for each beam row ``b`` in ``beams`` (int), clear in ``allowed[b]`` (Bool
        [B, num_local]) the moves of its node ``nodes[b]`` (int [B], a real node) that lead to no
        remaining item. Only nodes that lost a move cost anything."""
        m = self.moves
        at = nodes[beams]
        dirty = self.live[at] < m.count[at]
        if self.touched.size:
            dirty |= _in_sorted(at, self.touched)
        beams, at = beams[dirty], at[dirty]
        if not beams.size:
            return
        counts = m.count[at]
        idx = _ranges(m.start[at], counts)
        gone = ~self.live_moves[idx]
        if self.dead.size:
            gone |= _in_sorted(idx, self.dead)
        allowed[np.repeat(beams, counts)[gone], m.local[idx[gone]]] = False

    def allows(self, rows: np.ndarray) -> np.ndarray:
        """Bool like ``rows``: which item rows remain."""
        ok = self.rows[rows]
        if self.excluded.size:
            ok &= ~_in_sorted(rows, self.excluded)
        return ok

    def items(self, trie: Trie, node: int) -> list[str]:
        """The remaining items whose SID ends at ``node``, most popular first."""
        rows = trie.item_rows[trie.item_start[node] : trie.item_start[node + 1]]
        return [trie.item(r) for r in rows[self.allows(rows)]]
