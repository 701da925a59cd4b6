"""Exclusions and filters inside the decode, on the tiny trained decoder.

The tiny trie has 36 SIDs and at most 25 nodes per depth, so 32 beams hold every live prefix
and their top 64 candidates every move: the beam search is exhaustive there. The exact statement
tested: the answer for a request equals the exhaustive ranking of every SID (one unfiltered
decode finishing all of them) walked best first, listing each SID's items the request may
return, cut at k. So pruned SIDs cost no beam and k
items come back whenever the index holds k allowed items.
"""

from __future__ import annotations

import numpy as np
import pytest

from indexer.data.catalog import load_sequences
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index.attributes import Condition, Filter, FilterError
from sidcore.retriever import Query, Retriever

BEAMS = 32


@pytest.fixture(scope="module")
def retriever(tiny_stack):
    # Items inside a SID in index order, as the exhaustive oracle below lists them.
    return Retriever(tiny_stack.decoder, TorchEngine(tiny_stack.decoder), beam_width=BEAMS, max_beam_width=BEAMS, within="popularity")


@pytest.fixture(scope="module")
def histories(tiny_stack):
    return [tuple(h) for h in load_sequences(tiny_stack.data_dir / "sequences.jsonl")[:12]]


def ranking(retriever, snap, q: Query) -> list[tuple[str, float]]:
    """Every item of the index, in the order an unfiltered exhaustive decode ranks its SID."""
    trie = snap.trie
    moves = retriever.mask(trie).moves
    per_depth = [int(moves.count[nodes].sum()) for nodes in moves.by_depth]
    assert np.bincount(trie.depth).max() <= BEAMS and max(per_depth) <= 2 * BEAMS  # exhaustive
    prompt = retriever.prompt(trie, q)
    (hits,), _ = retriever.engine.decode([prompt], 2 * BEAMS, trie.num_sids, mask=retriever.mask(trie))
    assert len(hits) == trie.num_sids
    return [(item, h.score) for h in hits for item in trie.items_of(h.node)]


def allowed_ids(snap, q: Query) -> set[str]:
    """The items ``q`` may return, computed the slow way."""
    trie, attrs = snap.trie, snap.attributes
    keep = set()
    for row in range(trie.num_items):
        values = attrs.row(row)
        ok = q.filter is None or (all(_matches(c, values) for c in q.filter.must) and not any(_matches(c, values) for c in q.filter.must_not))
        if ok:
            keep.add(trie.item(row))
    out = set(q.exclude_ids) | (set(q.history) if q.exclude_history else set())
    return keep - out


def _matches(cond: Condition, values: dict) -> bool:
    if cond.field not in values:
        return False
    v = values[cond.field]
    if cond.op == "range":
        ops = {"gt": v.__gt__, "gte": v.__ge__, "lt": v.__lt__, "lte": v.__le__}
        return all(ops[op](bound) for op, bound in cond.bounds)
    return v in cond.values


def expected(retriever, snap, q: Query) -> list[tuple[str, float]]:
    keep = allowed_ids(snap, q)
    return [(item, score) for item, score in ranking(retriever, snap, q) if item in keep][: q.k]


def check(retriever, snap, q: Query) -> list[str]:
    (result,), _ = retriever.retrieve(snap, [q])
    want = expected(retriever, snap, q)
    assert [i.item_id for i in result.items] == [item for item, _ in want]
    assert [i.score for i in result.items] == pytest.approx([s for _, s in want], abs=1e-4)
    return [i.item_id for i in result.items]


@pytest.mark.parametrize("k", [5, 20])
def test_history_items_are_excluded_and_k_items_still_come_back(retriever, tiny_stack, histories, k):
    snap = tiny_stack.snapshot
    for history in histories:
        got = check(retriever, snap, Query(history=history, k=k))
        assert len(got) == k and not set(got) & set(history)
        kept = check(retriever, snap, Query(history=history, k=k, exclude_history=False))
        assert len(kept) == k


def test_exclude_ids_and_ignoring_unknown_ones(retriever, tiny_stack, histories):
    snap = tiny_stack.snapshot
    unfiltered = check(retriever, snap, Query(query=tiny_stack.catalog.texts[3], k=10))
    excluded = tuple(unfiltered[:4]) + ("no-such-item",)
    got = check(retriever, snap, Query(query=tiny_stack.catalog.texts[3], k=10, exclude_ids=excluded))
    assert len(got) == 10 and not set(got) & set(excluded) and got[:6] == unfiltered[4:]


FILTERS = [
    Filter(must=(Condition.eq("available", True),)),
    Filter(must=(Condition.any_of("category", ["Toys", "Books", "Pets"]),)),
    Filter(must=(Condition.range("price", gte=20, lt=80),), must_not=(Condition.eq("available", False),)),
    Filter(must_not=(Condition.any_of("category", ["Kitchen", "Garden", "Electronics", "Toys", "Sports", "Books"]),)),
]


@pytest.mark.parametrize("flt", FILTERS, ids=["available", "categories", "price-band", "not-six-categories"])
def test_filtered_answers_are_the_exhaustive_ranking_restricted_to_allowed_items(retriever, tiny_stack, histories, flt):
    snap = tiny_stack.snapshot
    for history in histories[:6]:
        for q in (Query(history=history, k=10, filter=flt), Query(query=tiny_stack.catalog.texts[len(history)], k=25, filter=flt)):
            got = check(retriever, snap, q)
            allowed = allowed_ids(snap, q)
            assert set(got) <= allowed and len(got) == min(q.k, len(allowed))


def test_a_filter_keeping_ten_percent_still_fills_k(retriever, tiny_stack, histories):
    snap = tiny_stack.snapshot
    price = snap.attributes["price"].data
    cut = float(np.quantile(price, 0.1))
    flt = Filter(must=(Condition.range("price", lte=cut),))
    assert 0.05 < np.mean(price <= cut) <= 0.15
    for history in histories[:4]:
        got = check(retriever, snap, Query(history=history, k=20, filter=flt))
        assert len(got) == 20


def test_a_filter_that_keeps_nothing_answers_empty_with_a_reason(retriever, tiny_stack):
    snap = tiny_stack.snapshot
    stats_before = retriever.filters.misses
    for q in (Query(query="x", filter=Filter(must=(Condition.eq("brand", "no such brand"),))),
              Query(query="x", k=10, filter=Filter(must=(Condition.range("price", gt=1e9),)))):
        (result,), stats = retriever.retrieve(snap, [q])
        assert result.items == [] and result.sids == [] and "no item" in result.reason and stats.groups == []
    assert retriever.filters.misses == stats_before + 2
    one = snap.trie.item(0)
    (few,), _ = retriever.retrieve(snap, [Query(query="x", k=10, exclude_ids=tuple(snap.trie.item(r) for r in range(1, snap.trie.num_items)))])
    assert [i.item_id for i in few.items] == [one] and "only 1 item" in few.reason


def test_a_repeated_filter_is_built_once(retriever, tiny_stack):
    snap = tiny_stack.snapshot
    flt = Filter(must=(Condition.eq("category", "Garden"), Condition.eq("available", True)))
    same = Filter(must=(Condition.any_of("available", [True]), Condition.any_of("category", ["Garden"])))
    retriever.retrieve(snap, [Query(query="a", filter=flt)])
    misses, hits = retriever.filters.misses, retriever.filters.hits
    retriever.retrieve(snap, [Query(query="b", filter=same), Query(query="c", filter=flt)])
    assert retriever.filters.misses == misses and retriever.filters.hits == hits + 2


def test_filters_are_checked_against_the_index(retriever, tiny_stack):
    snap = tiny_stack.snapshot
    with pytest.raises(FilterError, match="unknown attribute 'colour'"):
        retriever.validate(snap, Query(query="x", filter=Filter(must=(Condition.eq("colour", "red"),))))
    with pytest.raises(FilterError, match="unknown attribute"):
        retriever.validate(tiny_stack.trie, Query(query="x", filter=Filter(must=(Condition.eq("available", True),))))  # a bare trie has none


def test_batched_requests_with_different_masks_equal_single_ones(retriever, tiny_stack, histories):
    snap = tiny_stack.snapshot
    queries = [Query(history=h, k=10, filter=FILTERS[i % len(FILTERS)] if i % 3 else None) for i, h in enumerate(histories)]
    batched, _ = retriever.retrieve(snap, queries)
    for q, res in zip(queries, batched):
        (single,), _ = retriever.retrieve(snap, [q])
        assert [i.item_id for i in res.items] == [i.item_id for i in single.items]
