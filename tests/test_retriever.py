"""Retriever on its own: beam plans, unknown history ids, one mask per snapshot, items in SID order
(inside a SID: by similarity to the request, or by popularity)."""

from __future__ import annotations

import numpy as np
import pytest

from sidcore.engines.torch_engine import TorchEngine
from sidcore.errors import DataError
from sidcore.index.trie import Trie
from sidcore.retriever import IndexMismatch, Query, Retriever, UnknownItems


@pytest.fixture(scope="module")
def retriever(tiny_stack):
    return Retriever(tiny_stack.decoder, TorchEngine(tiny_stack.decoder), beam_width=8, max_beam_width=32)


def test_beam_plans(retriever):
    assert retriever.plan(Query("q", k=3)) == (8, 3)  # the default beam, k SIDs
    assert retriever.plan(Query("q", k=20)) == (20, 20)  # k above the default raises the beam to k
    assert retriever.plan(Query("q", k=500)) == (32, 32)  # ... up to the widest
    assert retriever.plan(Query("q", k=10, beam_width=4)) == (4, 4)
    with pytest.raises(DataError, match="beam_width must be in"):
        retriever.plan(Query("q", k=5, beam_width=33))


def test_unknown_history_ids_name_their_positions(retriever, tiny_stack):
    known = tiny_stack.art.item_ids[0]
    with pytest.raises(UnknownItems) as e:
        retriever.prompt(tiny_stack.trie, Query(history=(known, "nope-1", known, "nope-2")))
    assert e.value.positions == [1, 3] and e.value.ids == ["nope-1", "nope-2"]


def test_items_follow_sid_order_and_stop_at_k(tiny_stack):
    """By popularity: each SID's items in the index's order."""
    retriever = Retriever(tiny_stack.decoder, TorchEngine(tiny_stack.decoder), beam_width=8, max_beam_width=32, within="popularity")
    trie = tiny_stack.trie
    history = tuple(tiny_stack.art.item_ids[:3])
    (result,), stats = retriever.retrieve(trie, [Query(history=history, k=7, exclude_history=False)])
    assert result.index_version == trie.version and result.beam_width == 8 and stats.steps >= 1
    assert len(result.items) == min(7, sum(len(trie.items_of(h.node)) for h in result.sids))
    expected = [(item, h.sid) for h in result.sids for item in trie.items_of(h.node)][:7]
    assert [(i.item_id, i.sid) for i in result.items] == expected
    scores = [h.score for h in result.sids]
    assert scores == sorted(scores, reverse=True)


def test_items_of_a_sid_are_ordered_by_similarity_to_the_history(retriever, tiny_stack):
    """The default: inside each SID, the items closest (cosine) to the history's mean embedding first."""
    trie, items = tiny_stack.trie, tiny_stack.decoder.items
    history = tuple(tiny_stack.art.item_ids[:3])
    (result,), _ = retriever.retrieve(trie, [Query(history=history, k=30, exclude_history=False)])
    by = items.vectors[items.rows(history)].mean(0)
    by /= np.linalg.norm(by)
    expected = []
    for h in result.sids:
        members = trie.items_of(h.node)
        expected += sorted(members, key=lambda i: -float(items.vectors[items.row[i]] @ by))
    assert [i.item_id for i in result.items] == expected[:30]
    assert any(len(trie.items_of(h.node)) > 1 for h in result.sids), "some SID should hold several items"


def test_one_mask_per_snapshot_and_layout_checked(retriever, tiny_stack):
    trie = tiny_stack.trie
    assert retriever.mask(trie) is retriever.mask(trie)
    art = tiny_stack.art
    other = Trie.from_items(art.item_ids, art.codes, art.lengths, (*art.sizes[:-1], art.sizes[-1] + 1), version="other")
    with pytest.raises(IndexMismatch, match="codebook sizes"):
        retriever.mask(other)
