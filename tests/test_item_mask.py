"""Item masks against brute force: a move survives iff it leads to an item the request may return,
built from a row set or by excluding rows from one, and ``prune`` clears exactly the dead moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sidcore.decoder.vocab import SIDVocab
from sidcore.index import Trie, TrieMask
from sidcore.index.item_mask import ItemMask

SIZES = (3, 3, 4)


def build(sids, items_per_sid) -> Trie:
    codes = np.zeros((sum(items_per_sid), len(SIZES)), dtype=np.int64)
    lengths, ids, at = [], [], 0
    for g, (sid, n) in enumerate(zip(sids, items_per_sid)):
        for j in range(n):
            codes[at, : len(sid)] = sid
            lengths.append(len(sid))
            ids.append(f"g{g}-{j}")
            at += 1
    return Trie.from_items(ids, codes, lengths, SIZES)


def brute_moves(trie: Trie, mask: TrieMask, rows: np.ndarray) -> np.ndarray:
    """Bool [M]: does each move lead to a kept item? By walking every node's subtree."""
    m = mask.moves
    keep = np.zeros(trie.num_items, dtype=bool)
    keep[rows] = True
    out = np.zeros(m.num_moves, dtype=bool)

    def subtree_has(node: int) -> bool:
        own = any(keep[r] for r in trie.item_rows[trie.item_start[node] : trie.item_start[node + 1]])
        kids = trie.child_node[trie.child_start[node] : trie.child_start[node + 1]]
        return own or any(subtree_has(int(c)) for c in kids)

    for move, target in enumerate(m.target):
        if target >= 0:
            out[move] = subtree_has(int(target))
        else:
            node = int(np.searchsorted(m.start, move, side="right") - 1)
            out[move] = any(keep[r] for r in trie.item_rows[trie.item_start[node] : trie.item_start[node + 1]])
    return out


def effective(im: ItemMask) -> np.ndarray:
    live = im.live_moves.copy()
    live[im.dead] = False
    return live


sid_lists = st.lists(
    st.lists(st.integers(0, 2), min_size=1, max_size=3).map(lambda s: tuple(s[:2]) + tuple(min(c, 3) for c in s[2:])),
    min_size=1, max_size=25, unique=True,
)


@settings(max_examples=150, deadline=None)
@given(sids=sid_lists, data=st.data())
def test_masks_match_brute_force(sids, data):
    counts = data.draw(st.lists(st.integers(1, 3), min_size=len(sids), max_size=len(sids)))
    trie = build(sids, counts)
    mask = TrieMask(trie, SIDVocab(SIZES, base=0))
    n = trie.num_items
    kept = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    base = ItemMask.of_rows(mask.moves, kept)
    assert np.array_equal(base.live_moves, brute_moves(trie, mask, np.flatnonzero(kept)))
    assert base.empty == (not kept.any()) and base.num_rows == kept.sum()

    excluded = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=n)), dtype=np.int64)
    for start in (base, ItemMask.everything(mask.moves)):
        derived = start.excluding(excluded)
        left = start.rows.copy()
        left[excluded] = False
        assert np.array_equal(effective(derived), brute_moves(trie, mask, np.flatnonzero(left)))
        assert derived.empty == (not left.any()) and derived.num_rows == left.sum()
        assert np.array_equal(derived.allows(np.arange(n)), left)

        # prune clears exactly the dead moves of every beam's node
        nodes = np.arange(trie.num_nodes)
        allowed = mask.allowed(torch.from_numpy(nodes)).numpy().copy()
        before = allowed.copy()
        derived.prune(allowed, nodes, nodes)
        live = effective(derived)
        m = mask.moves
        for node in nodes:
            block = slice(m.start[node], m.start[node] + m.count[node])
            want = np.zeros_like(before[node])
            want[m.local[block][live[block]]] = True
            assert np.array_equal(allowed[node], want)


def test_excluding_a_sids_last_item_prunes_up_to_the_root():
    trie = build([(0, 1), (0, 2, 3), (1, 0)], [1, 2, 1])
    mask = TrieMask(trie, SIDVocab(SIZES, base=0))
    everything = ItemMask.everything(mask.moves)
    rows = trie.rows_of(["g0-0", "g1-0", "g1-1"])  # all of first code 0
    derived = everything.excluding(rows)
    root = torch.tensor([0])
    allowed = mask.allowed(root).numpy().copy()
    derived.prune(allowed, np.array([0]), np.array([0]))
    vocab = SIDVocab(SIZES, base=0)
    assert not allowed[0, vocab.local(0, 0)] and allowed[0, vocab.local(0, 1)]
    assert not derived.empty and derived.num_rows == 1
    with pytest.raises(ValueError):
        derived.excluding(rows)
    assert everything.excluding(trie.rows_of(["g0-0", "g1-0", "g1-1", "g2-0"])).empty


def test_rows_of_matches_row_lookup():
    trie = build([(0, 1), (0, 2, 3), (1, 0)], [1, 2, 1])
    ids = ["g1-1", "nope", "g0-0", "", "g1-0", "g2-0", "g2-00"]
    assert trie.rows_of(ids).tolist() == [trie._row_of(i) for i in ids]
    assert trie.rows_of([]).tolist() == []
