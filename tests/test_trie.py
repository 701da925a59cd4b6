"""The array trie: built from an artifact or from Redis, the same; copy-on-write cold-start inserts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from indexer.coldstart import add_items
from sidcore.errors import DataError
from sidcore.index import Trie


def build(sids: list[tuple[int, ...]], sizes=(3, 4, 6), ids=None, popularity=None) -> Trie:
    codes = np.zeros((len(sids), len(sizes)), dtype=np.int64)
    for i, sid in enumerate(sids):
        codes[i, : len(sid)] = sid
    ids = ids or [f"item{i}" for i in range(len(sids))]
    return Trie.from_items(ids, codes, [len(s) for s in sids], sizes, popularity, version="v1")


def assert_same_trie(a: Trie, b: Trie) -> None:
    for f in dataclasses.fields(Trie):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y, f.name


def sid_map(trie: Trie) -> dict[tuple[int, ...], list[str]]:
    return {trie.sid_of(int(n)): trie.items_of(int(n)) for n in trie.terminal_nodes()}


def test_hand_built_trie_structure():
    trie = build([(1,), (1, 2), (1, 2, 3), (2, 0, 5), (1, 2)], ids=["a", "b", "c", "d", "e"], popularity=[1, 1, 1, 1, 5])
    assert trie.num_nodes == 7  # root, 1, 2, 1-2, 2-0, 1-2-3, 2-0-5
    assert trie.num_sids == 4 and trie.num_items == 5
    assert list(trie.depth) == [0, 1, 1, 2, 2, 3, 3]  # breadth-first
    assert sid_map(trie) == {(1,): ["a"], (1, 2): ["e", "b"], (1, 2, 3): ["c"], (2, 0, 5): ["d"]}
    one_two = trie.node_of((1, 2))
    assert trie.terminal[one_two] and trie.child(one_two, 3) == trie.node_of((1, 2, 3))  # complete and a prefix
    assert not trie.terminal[trie.node_of((2,))] and trie.items_of(trie.node_of((2, 0))) == []
    assert trie.node_of((0,)) == -1 and trie.node_of((1, 2, 3, 4)) == -1 and trie.child(trie.ROOT, 2) == trie.node_of((2,))
    assert [trie.node_of_item(i) for i in "abcde"] == [trie.node_of(s) for s in [(1,), (1, 2), (1, 2, 3), (2, 0, 5), (1, 2)]]
    assert trie.node_of_item("zz") == -1
    for n in range(trie.num_nodes):
        kids = trie.child_code[trie.child_start[n] : trie.child_start[n + 1]]
        assert list(kids) == sorted(kids)
    with pytest.raises(ValueError):
        trie.terminal[0] = True  # arrays are read-only: snapshots are shared between threads


def test_trie_from_artifact_matches_its_sid_table(artifact):
    trie = Trie.from_artifact(artifact)
    table = artifact.table()
    assert (trie.num_sids, trie.num_items, trie.version) == (table.num_sids, len(artifact.item_ids), artifact.version)
    for g in range(table.num_sids):
        members = table.items_of_group(g)
        node = trie.node_of(table.sid_of(int(members[0])))
        assert trie.items_of(node) == [str(artifact.item_ids[i]) for i in members]
    for i in range(0, len(artifact.item_ids), 97):
        assert trie.sid_of(trie.node_of_item(str(artifact.item_ids[i]))) == table.sid_of(i)


def test_trie_from_redis_equals_trie_from_artifact(index, small_store, artifact, new_items):
    index.publish(small_store, activate=True, progress=False)
    loaded, last = index.load_trie()
    assert last == "0-0"
    assert_same_trie(loaded, Trie.from_artifact(artifact))

    result = add_items(index, new_items(5, copy_of=(7,)), progress=False)
    loaded, last = index.load_trie()
    assert last == result.log_id
    assert_same_trie(loaded, Trie.from_artifact(artifact).insert(result.items))


def test_insert_is_copy_on_write_and_keeps_node_ids():
    old = build([(1,), (1, 2), (1, 2, 3), (2, 0, 5)], ids=["a", "b", "c", "d"])
    before = {n: (old.sid_of(n), old.items_of(n)) for n in range(old.num_nodes)}
    new = old.insert([("x", (1, 2)), ("y", (0, 1)), ("z", (0, 1, 2)), ("w", (2, 0)), ("v", (1, 2))])

    assert {n: (old.sid_of(n), old.items_of(n)) for n in range(old.num_nodes)} == before  # untouched
    for n, (sid, items) in before.items():
        assert new.sid_of(n) == sid
        assert new.items_of(n)[: len(items)] == items
    assert new.items_of(new.node_of((1, 2))) == ["b", "x", "v"]  # appended in insertion order
    assert sid_map(new) == {**sid_map(old), (1, 2): ["b", "x", "v"], (0, 1): ["y"], (0, 1, 2): ["z"], (2, 0): ["w"]}
    assert new.num_nodes == old.num_nodes + 3  # 0, 0-1, 0-1-2; 2-0 existed and just became terminal
    assert min(new.node_of((0,)), new.node_of((0, 1)), new.node_of((0, 1, 2))) >= old.num_nodes
    assert list(new.child_code[new.child_start[0] : new.child_start[1]]) == [0, 1, 2]
    assert [new.node_of_item(i) for i in "abcdxyzwv"] == [new.node_of(new.sid_of(new.node_of_item(i))) for i in "abcdxyzwv"]
    assert old.node_of_item("x") == -1 and new.node_of_item("x") == new.node_of((1, 2))
    assert new.insert([]) is new


def test_insert_matches_a_fresh_build():
    rng = np.random.default_rng(0)
    sids = sorted({tuple(int(c) for c in rng.integers(0, 4, size=rng.integers(1, 4))) for _ in range(60)})
    first, rest = sids[::2], sids[1::2]
    grown = build(first, sizes=(4, 4, 4)).insert([(f"late{i}", s) for i, s in enumerate(rest)])
    fresh = build(first + rest, sizes=(4, 4, 4), ids=[f"item{i}" for i in range(len(first))] + [f"late{i}" for i in range(len(rest))])
    assert sid_map(grown) == sid_map(fresh)
    assert grown.num_nodes == fresh.num_nodes


def test_insert_refuses_duplicates_and_invalid_sids():
    trie = build([(1,), (1, 2)])
    with pytest.raises(DataError, match="already in the index"):
        trie.insert([("item0", (2,))])
    with pytest.raises(DataError, match="twice"):
        trie.insert([("n", (2,)), ("n", (1,))])
    with pytest.raises(DataError, match="outside"):
        trie.insert([("n", (3,))])
    with pytest.raises(DataError, match="longer"):
        trie.insert([("n", (1, 1, 1, 1))])
    with pytest.raises(DataError, match="lengths"):
        trie.insert([("n", ())])


def test_item_ids_round_trip_any_text():
    ids = ["", "é", "a\nb", "日本", "x" * 300, "0", "00"]
    trie = build([(0,), (0, 1), (1,), (1, 1), (2,), (2, 0), (2, 0, 1)], ids=ids)
    assert sorted(i for items in sid_map(trie).values() for i in items) == sorted(ids)
    assert all(trie.sid_of(trie.node_of_item(i)) for i in ids)
    assert trie.insert([("日本語", (0,))]).node_of_item("日本語") == trie.node_of((0,))
