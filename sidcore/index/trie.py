"""A compact, immutable SID trie in flat numpy arrays.

Nodes are numbered breadth-first when a trie is built, so a node's children are contiguous and
sorted by code (CSR: ``child_start``, ``child_code``, ``child_node``). Each node has a depth, a
terminal flag (some SID ends there; it may also have children) and a CSR list of item rows, most
popular first. Item ids live in one UTF-8 byte array with offsets, plus a sorted 64-bit hash index
for item -> node lookups, so a million SIDs cost tens of MB rather than the GBs of nested dicts.

Cold-start inserts are copy-on-write: ``insert`` returns a new ``Trie`` sharing nothing mutable
with the old one, built with a few vectorised O(size) array copies (milliseconds on a 1M-SID trie)
plus a Python walk per inserted item. Existing node ids never change: new nodes get the next free
ids and new items the next rows. So a reader holding the old trie (a decode in flight) stays
consistent, node ids it holds stay valid in the new trie, and a holder publishes the new trie
by swapping one reference. Node ids of an updated trie are no longer breadth-first, which nothing
relies on: only the per-node child order (by code) is an invariant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence

import numpy as np

from sidcore.errors import DataError
from sidcore.sid import SIDTable

_U64 = np.uint64
_HASH_PRIME = _U64(0x100000001B3)


def pack_strings(strings: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of all strings back to back, and offsets (len + 1)."""
    encoded = [s.encode() for s in strings]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)


def hash_strings(offsets: np.ndarray, blob: np.ndarray) -> np.ndarray:
    """A 64-bit hash per packed string: a polynomial over its bytes, then the splitmix64 finaliser.

    Vectorised column by column (byte position j of every string at once); with strings sorted by
    length, the ones still running at position j are a prefix, so the work is ~ total bytes.
    """
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")
    starts, by_length = offsets[:-1][order], lengths[order]
    h = by_length.astype(_U64)
    with np.errstate(over="ignore"):
        for j in range(int(by_length.max(initial=0))):
            k = int(np.searchsorted(-by_length, -j, side="left"))  # strings longer than j
            h[:k] = h[:k] * _HASH_PRIME + blob[starts[:k] + j]
        h ^= h >> _U64(30)
        h *= _U64(0xBF58476D1CE4E5B9)
        h ^= h >> _U64(27)
        h *= _U64(0x94D049BB133111EB)
        h ^= h >> _U64(31)
    out = np.empty_like(h)
    out[order] = h
    return out


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    # Sorting beats np.unique's hash path several-fold on millions of int64 keys.
    s = np.sort(keys)
    return s[np.concatenate([[True], s[1:] != s[:-1]])] if len(s) else s


def _frozen(a, dtype) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype)
    a.flags.writeable = False
    return a


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Trie:
    """SID trie of one index version. Node 0 is the root (depth 0, no code)."""

    version: str
    sizes: tuple[int, ...]
    parent: np.ndarray  # int32 [N], -1 at the root
    code: np.ndarray  # int32 [N], code on the edge from the parent, -1 at the root
    depth: np.ndarray  # int8 [N]
    terminal: np.ndarray  # bool [N]
    child_start: np.ndarray  # int64 [N+1]
    child_code: np.ndarray  # int32 [E], ascending within each node
    child_node: np.ndarray  # int32 [E]
    item_start: np.ndarray  # int64 [N+1]
    item_rows: np.ndarray  # int32 [I], rows of the item table, per node most popular first
    item_node: np.ndarray  # int32 [I], node of each item row
    id_offsets: np.ndarray  # int64 [I+1]
    id_blob: np.ndarray  # uint8, UTF-8 item ids back to back
    id_hash: np.ndarray  # uint64 [I], ascending
    id_hash_row: np.ndarray  # int32 [I], item row of each id_hash entry

    ROOT = 0

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_items(
        cls,
        item_ids: Sequence[str] | np.ndarray,
        codes: np.ndarray,
        lengths: np.ndarray,
        sizes: tuple[int, ...],
        popularity: np.ndarray | None = None,
        version: str = "",
    ) -> "Trie":
        """From per-item SIDs (codes N x L, lengths N); items of a SID ordered by popularity."""
        codes, lengths = np.asarray(codes), np.asarray(lengths)
        pop = np.zeros(len(lengths)) if popularity is None else np.asarray(popularity)
        table = SIDTable.build(codes, lengths, tuple(sizes), pop)
        first = table.order[table.starts[:-1]]
        offsets, blob = pack_strings(str(i) for i in np.asarray(item_ids)[table.order])
        return cls.from_groups(sizes, codes[first], lengths[first], table.group_sizes, offsets, blob, version)

    @classmethod
    def from_artifact(cls, artifact) -> "Trie":
        """From an ``indexer.build.IndexArtifact``."""
        a = artifact
        return cls.from_items(a.item_ids, a.codes, a.lengths, a.sizes, a.popularity, a.version)

    @classmethod
    def from_groups(
        cls,
        sizes: Sequence[int],
        codes: np.ndarray,
        lengths: np.ndarray,
        counts: np.ndarray,
        id_offsets: np.ndarray,
        id_blob: np.ndarray,
        version: str = "",
    ) -> "Trie":
        """From distinct SIDs (codes S x L, lengths S) with ``counts[g]`` items each.

        The item table lists group 0's items, then group 1's, ..., each most popular first.
        """
        sizes = tuple(int(m) for m in sizes)
        codes, lengths, counts = np.asarray(codes, dtype=np.int64), np.asarray(lengths, dtype=np.int64), np.asarray(counts)
        _check_sids(sizes, codes, lengths)
        if np.any(counts < 1) or int(counts.sum()) != len(id_offsets) - 1:
            raise DataError("every SID needs at least one item and the item table must match the counts")
        if math.prod(sizes) >= 2**63:
            raise DataError(f"codebook sizes {sizes} are too large to key SID prefixes in 64 bits")

        # Depth by depth: a prefix's key is mixed radix over its codes, so sorted unique keys give
        # nodes ordered by (parent, code), i.e. breadth-first with each node's children contiguous.
        parents, node_codes, depths = [np.array([-1])], [np.array([-1])], [np.array([0])]
        prev_keys, prev_first, num_nodes = np.zeros(1, dtype=np.int64), 0, 1
        key = np.zeros(len(lengths), dtype=np.int64)
        terminal_node = np.empty(len(lengths), dtype=np.int64)
        for d, m in enumerate(sizes, start=1):
            live = lengths >= d
            key = key * m + np.where(live, codes[:, d - 1] if codes.shape[1] >= d else 0, 0)
            uniq = _sorted_unique(key[live])
            parents.append(prev_first + np.searchsorted(prev_keys, uniq // m))
            node_codes.append(uniq % m)
            depths.append(np.full(len(uniq), d))
            ends = lengths == d
            terminal_node[ends] = num_nodes + np.searchsorted(uniq, key[ends])
            prev_keys, prev_first, num_nodes = uniq, num_nodes, num_nodes + len(uniq)
        parent = np.concatenate(parents)
        code = np.concatenate(node_codes)

        item_node = np.repeat(terminal_node, counts)
        per_node = np.bincount(item_node, minlength=num_nodes)
        # Copies: freezing the caller's own arrays would be a surprise.
        offsets = np.array(id_offsets, dtype=np.int64)
        blob = np.array(id_blob, dtype=np.uint8)
        id_hash = hash_strings(offsets, blob)
        by_hash = np.argsort(id_hash, kind="stable")
        return cls(
            version=version,
            sizes=sizes,
            parent=_frozen(parent, np.int32),
            code=_frozen(code, np.int32),
            depth=_frozen(np.concatenate(depths), np.int8),
            terminal=_frozen(per_node > 0, bool),
            child_start=_frozen(_exclusive_cumsum(np.bincount(parent[1:], minlength=num_nodes)), np.int64),
            child_code=_frozen(code[1:], np.int32),
            child_node=_frozen(np.arange(1, num_nodes), np.int32),
            item_start=_frozen(_exclusive_cumsum(per_node), np.int64),
            item_rows=_frozen(np.argsort(item_node, kind="stable"), np.int32),
            item_node=_frozen(item_node, np.int32),
            id_offsets=_frozen(offsets, np.int64),
            id_blob=_frozen(blob, np.uint8),
            id_hash=_frozen(id_hash[by_hash], np.uint64),
            id_hash_row=_frozen(by_hash, np.int32),
        )

    # -- sizes --------------------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return len(self.parent)

    @property
    def num_items(self) -> int:
        return len(self.item_node)

    @cached_property
    def num_sids(self) -> int:
        return int(self.terminal.sum())

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f).nbytes for f in self.__dataclass_fields__ if isinstance(getattr(self, f), np.ndarray))

    # -- lookups ------------------------------------------------------------------------------
    def child(self, node: int, code: int) -> int:
        """The child of ``node`` along ``code``, or -1."""
        lo, hi = self.child_start[node], self.child_start[node + 1]
        i = lo + int(np.searchsorted(self.child_code[lo:hi], code))
        return int(self.child_node[i]) if i < hi and self.child_code[i] == code else -1

    def node_of(self, sid: Sequence[int]) -> int:
        """The node reached by ``sid`` (a SID or a prefix of one), or -1."""
        node = self.ROOT
        for c in sid:
            node = self.child(node, int(c))
            if node < 0:
                return -1
        return node

    def sid_of(self, node: int) -> tuple[int, ...]:
        codes = []
        while node > self.ROOT:
            codes.append(int(self.code[node]))
            node = int(self.parent[node])
        return tuple(reversed(codes))

    def item(self, row: int) -> str:
        return self.id_blob[self.id_offsets[row] : self.id_offsets[row + 1]].tobytes().decode()

    def items_of(self, node: int) -> list[str]:
        """Items whose SID ends at ``node``, most popular first (cold-start items last)."""
        return [self.item(r) for r in self.item_rows[self.item_start[node] : self.item_start[node + 1]]]

    def node_of_item(self, item_id: str) -> int:
        """The terminal node of an item's SID, or -1 if the item is unknown."""
        row = self._row_of(item_id)
        return -1 if row < 0 else int(self.item_node[row])

    def rows_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """Int64 [len(item_ids)]: each id's item row, -1 for unknown ids; vectorised (a hash lookup
        per id, then a byte comparison of all candidates at once)."""
        if not len(item_ids) or not self.num_items:
            return np.full(len(item_ids), -1, dtype=np.int64)
        offsets, blob = pack_strings(item_ids)
        h = hash_strings(offsets, blob)
        at = np.minimum(np.searchsorted(self.id_hash, h), len(self.id_hash) - 1)
        rows = np.where(self.id_hash[at] == h, self.id_hash_row[at], -1).astype(np.int64)
        lengths = np.diff(offsets)
        found = np.flatnonzero(rows >= 0)
        r = rows[found]
        same = np.diff(self.id_offsets)[r] == lengths[found]
        # Compare the bytes of equal-length candidates, all at once.
        check = found[same]
        n = lengths[check]
        theirs = np.repeat(self.id_offsets[rows[check]] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
        ours = np.repeat(offsets[check] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
        differs = np.bincount(np.repeat(np.arange(len(check)), n), self.id_blob[theirs] != blob[ours], minlength=len(check)) > 0
        rows[found[~same]] = -1
        rows[check[differs]] = -1
        # A 64-bit hash collision (or a second id sharing the hash) takes the slow path.
        for j in np.flatnonzero(rows < 0):
            if self.id_hash[at[j]] == h[j]:
                rows[j] = self._row_of(item_ids[j])
        return rows

    def terminal_nodes(self) -> np.ndarray:
        return np.flatnonzero(self.terminal)

    def _row_of(self, item_id: str) -> int:
        offsets, blob = pack_strings([item_id])
        h = hash_strings(offsets, blob)[0]
        i = int(np.searchsorted(self.id_hash, h))
        while i < len(self.id_hash) and self.id_hash[i] == h:
            row = int(self.id_hash_row[i])
            if self.item(row) == item_id:
                return row
            i += 1
        return -1

    # -- cold start ---------------------------------------------------------------------------
    def insert(self, items: Sequence[tuple[str, Sequence[int]]]) -> "Trie":
        """A new trie with ``(item_id, sid)`` pairs added at the end of their SIDs' item lists.

        New SIDs create nodes (ids after the existing ones); nothing existing is renumbered.
        """
        if not items:
            return self
        ids = [str(item) for item, _ in items]
        sids = [tuple(int(c) for c in sid) for _, sid in items]
        _check_sids(self.sizes, *_pad(sids, len(self.sizes)))
        if len(set(ids)) != len(ids):
            raise DataError("the same item id appears twice in one insert")
        offsets, blob = pack_strings(ids)
        h = hash_strings(offsets, blob)
        at = np.minimum(np.searchsorted(self.id_hash, h), len(self.id_hash) - 1)
        maybe_known = self.id_hash[at] == h
        known = next((i for i, m in zip(ids, maybe_known) if m and self._row_of(i) >= 0), None)
        if known is not None:
            raise DataError(f"item {known!r} is already in the index")

        n, e, num_rows = self.num_nodes, len(self.child_code), self.num_items
        new_parent: list[int] = []
        new_code: list[int] = []
        new_depth: list[int] = []
        created: dict[tuple[int, int], int] = {}
        targets = np.empty(len(items), dtype=np.int64)
        for j, sid in enumerate(sids):
            node = self.ROOT
            for d, c in enumerate(sid, start=1):
                nxt = self.child(node, c) if node < n else -1
                if nxt < 0:
                    nxt = created.get((node, c), -1)
                if nxt < 0:
                    nxt = created[(node, c)] = n + len(new_parent)
                    new_parent.append(node)
                    new_code.append(c)
                    new_depth.append(d)
                node = nxt
            targets[j] = node
        n2 = n + len(new_parent)
        grow = n2 - n

        # New edges go at the end of their parent's children in code order, or at the very end
        # for new parents; np.insert keeps equal positions in the order given.
        p_new = np.asarray(new_parent, dtype=np.int64)
        c_new = np.asarray(new_code, dtype=np.int64)
        pos = np.full(grow, e, dtype=np.int64)
        for k in np.flatnonzero(p_new < n):
            lo, hi = self.child_start[p_new[k]], self.child_start[p_new[k] + 1]
            pos[k] = lo + np.searchsorted(self.child_code[lo:hi], c_new[k])
        order = np.lexsort((c_new, p_new, pos))
        child_start = np.concatenate([self.child_start, np.full(grow, e)]) + _exclusive_cumsum(np.bincount(p_new, minlength=n2))

        rows = np.arange(num_rows, num_rows + len(items))
        ipos = np.full(len(items), num_rows, dtype=np.int64)
        old = targets < n
        ipos[old] = self.item_start[targets[old] + 1]
        iorder = np.lexsort((rows, targets, ipos))
        item_start = np.concatenate([self.item_start, np.full(grow, num_rows)]) + _exclusive_cumsum(np.bincount(targets, minlength=n2))
        terminal = np.concatenate([self.terminal, np.zeros(grow, dtype=bool)])
        terminal[targets] = True

        horder = np.argsort(h, kind="stable")
        hpos = np.searchsorted(self.id_hash, h[horder])
        return Trie(
            version=self.version,
            sizes=self.sizes,
            parent=_frozen(np.concatenate([self.parent, p_new]), np.int32),
            code=_frozen(np.concatenate([self.code, c_new]), np.int32),
            depth=_frozen(np.concatenate([self.depth, new_depth]), np.int8),
            terminal=_frozen(terminal, bool),
            child_start=_frozen(child_start, np.int64),
            child_code=_frozen(np.insert(self.child_code, pos[order], c_new[order]), np.int32),
            child_node=_frozen(np.insert(self.child_node, pos[order], np.arange(n, n2)[order]), np.int32),
            item_start=_frozen(item_start, np.int64),
            item_rows=_frozen(np.insert(self.item_rows, ipos[iorder], rows[iorder]), np.int32),
            item_node=_frozen(np.concatenate([self.item_node, targets]), np.int32),
            id_offsets=_frozen(np.concatenate([self.id_offsets, self.id_offsets[-1] + offsets[1:]]), np.int64),
            id_blob=_frozen(np.concatenate([self.id_blob, blob]), np.uint8),
            id_hash=_frozen(np.insert(self.id_hash, hpos, h[horder]), np.uint64),
            id_hash_row=_frozen(np.insert(self.id_hash_row, hpos, rows[horder]), np.int32),
        )


def _pad(sids: Sequence[tuple[int, ...]], width: int) -> tuple[np.ndarray, np.ndarray]:
    codes = np.zeros((len(sids), width), dtype=np.int64)
    lengths = np.fromiter(map(len, sids), dtype=np.int64, count=len(sids))
    if np.any(lengths > width):
        raise DataError(f"a SID is longer than the index's {width} layers")
    for i, sid in enumerate(sids):
        codes[i, : len(sid)] = sid
    return codes, lengths


def _check_sids(sizes: tuple[int, ...], codes: np.ndarray, lengths: np.ndarray) -> None:
    if np.any(lengths < 1) or np.any(lengths > len(sizes)):
        raise DataError(f"SID lengths must be in 1..{len(sizes)}")
    for layer, m in enumerate(sizes):
        live = lengths > layer
        if layer >= codes.shape[1]:
            if live.any():
                raise DataError(f"SID codes have {codes.shape[1]} columns but lengths reach {layer + 1}")
            break
        col = codes[live, layer]
        if col.size and (col.min() < 0 or col.max() >= m):
            raise DataError(f"a layer-{layer + 1} code is outside [0, {m})")
