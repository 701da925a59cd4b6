"""Versions in a real Redis: publish, activate, failure safety, gc, cold-start inserts, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.coldstart import add_items
from indexer.data.catalog import Catalog
from indexer.quantizers import load_quantizer
from sa2crq.cli import cli, main
from sidcore.errors import DataError
from sidcore.index import RedisIndex
from sidcore.index.redis_index import LEASE_MS
from sidcore.sid import format_sid


def artifact_sids(art) -> dict[str, tuple[int, ...]]:
    return {str(i): tuple(int(c) for c in art.codes[n, : art.lengths[n]]) for n, i in enumerate(art.item_ids)}


def artifact_lists(art) -> dict[tuple[int, ...], list[str]]:
    table = art.table()
    out = {}
    for g in range(table.num_sids):
        members = table.items_of_group(g)
        out[table.sid_of(int(members[0]))] = [str(art.item_ids[i]) for i in members]
    return out


def assert_matches_artifact(index, art, version=None):
    sids = artifact_sids(art)
    assert index.sids_of(list(sids), version) == list(sids.values())
    lists = artifact_lists(art)
    assert index.items_of(list(lists), version) == list(lists.values())
    k = index.keys.of(version or art.version)
    assert index.r.hlen(k.sid) == len(lists)
    assert index.r.hlen(k.item) == len(sids)


def keys_of(index, version) -> list[bytes]:
    return list(index.r.scan_iter(match=index.keys.of(version).pattern))


def test_publish_activate_round_trip(index, small_store, artifact):
    with index.r.pubsub() as events:
        events.subscribe(index.keys.channel)
        result = index.publish(small_store, activate=True, progress=False)
        assert events.get_message(timeout=1)["type"] == "subscribe"
        announced = json.loads(events.get_message(timeout=1)["data"])

    assert result.version == artifact.version and result.published and result.activated
    assert index.active() == artifact.version
    assert announced == {"type": "activate", "version": artifact.version, "previous": None}
    assert_matches_artifact(index, artifact)

    (info,) = index.versions()
    assert (info.version, info.state, info.active, info.method) == (artifact.version, "complete", True, "sarq")
    assert (info.num_sids, info.num_items) == (artifact.table().num_sids, len(artifact.item_ids))
    files = index.quantizer_files(artifact.version)
    for name in ("quantizer.json", "quantizer.safetensors"):
        assert files[name] == (artifact.path / name).read_bytes()
    assert index.r.ttl(index.keys.of(artifact.version).lease) == -2  # lease released

    again = index.publish(small_store, progress=False)
    assert not again.published and again.version == artifact.version


@pytest.mark.parametrize("failure", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failed_publish_leaves_the_active_version_alone(index, small_store, artifact, renamed, failure):
    index.publish(small_store, activate=True, progress=False)
    broken = renamed("broken")

    def fail_after_first_chunk(done: int, total: int) -> None:
        assert 0 < done < total
        raise failure

    with pytest.raises(type(failure)):
        index.publish_artifact(broken, progress=False, chunk_size=50, on_chunk=fail_after_first_chunk)

    assert index.active() == artifact.version
    assert_matches_artifact(index, artifact)
    states = {i.version: i.state for i in index.versions()}
    assert states == {artifact.version: "complete", broken.version: "partial"}
    with pytest.raises(DataError, match="partial"):
        index.activate(broken.version)
    with pytest.raises(DataError, match="not complete"):
        index.load_trie(broken.version)
    assert index.active() == artifact.version

    assert index.gc(keep=10) == [broken.version]
    assert keys_of(index, broken.version) == []
    assert [i.version for i in index.versions()] == [artifact.version]

    assert index.publish_artifact(broken, progress=False).published  # the same id can be published afresh
    assert_matches_artifact(index, artifact, broken.version)


def test_publisher_killed_mid_write_is_never_activatable(index, redis_url, small_store, artifact, renamed):
    """A publisher process dies between chunks: its lease expires, gc removes its leftovers."""
    index.publish(small_store, activate=True, progress=False)
    dead = renamed("dead")
    script = textwrap.dedent(f"""
        import dataclasses, os, redis
        from sidcore.index.artifact import load_index
        from model_store import Store
        from sidcore.index import RedisIndex
        art = dataclasses.replace(load_index(Store({str(small_store.root)!r})), version={dead.version!r})
        index = RedisIndex(redis.Redis.from_url({redis_url!r}))
        index.publish_artifact(art, progress=False, chunk_size=50, on_chunk=lambda done, total: os._exit(3))
    """)
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == 3

    assert index.active() == artifact.version
    states = {i.version: i.state for i in index.versions()}
    assert states[dead.version] == "publishing"  # its lease is still running
    assert index.gc(keep=0) == []  # ... so gc leaves it to its publisher
    with pytest.raises(DataError, match="partial"):
        index.activate(dead.version)

    lease = index.keys.of(dead.version).lease
    assert 0 < index.r.pttl(lease) <= LEASE_MS
    index.r.delete(lease)  # what expiry does after LEASE_MS
    assert {i.version: i.state for i in index.versions()}[dead.version] == "partial"
    assert index.gc(keep=0) == [dead.version]
    assert keys_of(index, dead.version) == []
    assert_matches_artifact(index, artifact)


def test_activate_refuses_unknown_versions(index):
    with pytest.raises(DataError, match="unknown"):
        index.activate("index-nope")
    with pytest.raises(DataError, match="not a valid index version id"):
        index.activate("a{b}")
    assert index.active() is None


def test_gc_keeps_the_active_and_the_newest_versions(index, small_store, artifact, renamed):
    index.publish(small_store, progress=False)
    middle, newest = renamed("b"), renamed("c")
    index.publish_artifact(middle, progress=False)
    index.publish_artifact(newest, progress=False)
    index.activate(artifact.version)  # the oldest one is served

    assert index.gc(keep=1) == [middle.version]
    assert [i.version for i in index.versions()] == [artifact.version, newest.version]
    assert keys_of(index, middle.version) == []

    assert index.gc(keep=0) == [newest.version]
    assert [(i.version, i.active) for i in index.versions()] == [(artifact.version, True)]
    assert_matches_artifact(index, artifact)
    assert index.r.get(index.keys.active) == artifact.version.encode()


def test_cold_start_appends_without_renumbering(index, small_store, artifact, new_items):
    index.publish(small_store, activate=True, progress=False)
    before_sids = artifact_sids(artifact)
    before_lists = artifact_lists(artifact)
    catalog = new_items(6, copy_of=(3, 3, 40))  # new-0..2 reuse vectors of items 3, 3 and 40

    result = add_items(index, catalog, progress=False)

    quantizer = load_quantizer(artifact.path)
    codes = quantizer.encode(catalog.vectors, head=np.zeros(6, dtype=bool))
    lengths = quantizer.lengths(codes)
    expected = {i: tuple(int(c) for c in codes[n, : lengths[n]]) for n, i in enumerate(catalog.item_ids)}
    assert dict(result.items) == expected
    assert [item for item, _ in result.items] == catalog.item_ids  # popularity order, most popular first
    assert expected["new-0"] == expected["new-1"] == before_sids["3"]
    assert expected["new-2"] == before_sids["40"]

    assert index.sids_of(list(before_sids)) == list(before_sids.values())  # nobody renumbered
    assert index.sids_of(catalog.item_ids) == [expected[i] for i in catalog.item_ids]
    for sid in set(expected.values()):
        appended = [i for i in catalog.item_ids if expected[i] == sid]
        assert index.items_of([sid]) == [before_lists.get(sid, []) + appended]
    new_sids = len(set(expected.values()) - set(before_lists))
    assert result.new_sids == new_sids
    meta = index.meta(artifact.version)
    assert (meta["num_items"], meta["num_sids"]) == (len(before_sids) + 6, len(before_lists) + new_sids)

    items, last = index.log_since(artifact.version)
    assert items == list(result.items) and last == result.log_id
    assert index.log_since(artifact.version, last) == ([], last)


def test_cold_start_refuses_bad_batches_atomically(index, small_store, artifact, new_items):
    catalog = new_items(3)
    with pytest.raises(DataError, match="no active index version"):
        add_items(index, catalog, progress=False)

    index.publish(small_store, activate=True, progress=False)
    add_items(index, new_items(1), progress=False)  # new-0 is now taken
    meta = index.meta(artifact.version)
    with pytest.raises(DataError, match="already in index.*'new-0'"):
        add_items(index, catalog, progress=False)
    with pytest.raises(DataError, match="precomputed vectors"):
        add_items(index, Catalog(catalog.item_ids, catalog.texts, catalog.popularity), progress=False)
    with pytest.raises(DataError, match="16"):
        add_items(index, catalog, vectors=np.ones((3, 8), dtype=np.float32), progress=False)
    assert index.meta(artifact.version) == meta
    assert index.sids_of(["new-1", "new-2"]) == [None, None]


def run_cli(args: list[str]):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_cli_publish_versions_activate_gc_add_items(redis_url, index, small_store, artifact, renamed, new_items, items_file):
    v = artifact.version
    out = run_cli(["index", "publish", "--store", str(small_store.root), "--redis", redis_url, "--activate", "--quiet"])
    assert out.stdout.strip() == v
    assert index.active() == v

    index.publish_artifact(renamed("b"), progress=False)
    listing = run_cli(["index", "versions", "--redis", redis_url]).stdout.splitlines()
    assert any(line.startswith(f"* {v} ") and "complete" in line for line in listing)
    assert any(line.startswith(f"  {v}-b ") for line in listing)

    assert "was " + v in run_cli(["index", "activate", f"{v}-b", "--redis", redis_url]).stdout
    run_cli(["index", "activate", v, "--redis", redis_url])
    assert run_cli(["index", "gc", "--keep", "0", "--redis", redis_url]).stdout.strip() == f"removed {v}-b"

    items, vectors = items_file(new_items(2))
    out = run_cli(["index", "add-items", "--items", str(items), "--vectors", str(vectors), "--redis", redis_url])
    assert [line.split("\t")[0] for line in out.stdout.splitlines()] == ["new-0", "new-1"]
    assert index.sids_of(["new-0"])[0] is not None
    assert format_sid(index.sids_of(["new-1"])[0]) == out.stdout.splitlines()[1].split("\t")[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["index", "activate", "index-missing"], "version is unknown"),
        (["index", "add-items", "--items", "ITEMS", "--vectors", "VECTORS"], "already in index"),
        (["index", "publish", "--store", "EMPTY"], "no index version in store"),
    ],
)
def test_cli_bad_input_exits_2(monkeypatch, capsys, tmp_path, redis_url, index, small_store, new_items, items_file, args, message):
    index.publish(small_store, activate=True, progress=False)
    items, vectors = items_file(new_items(2))
    add_items(index, new_items(2), progress=False)
    paths = {"ITEMS": str(items), "VECTORS": str(vectors), "EMPTY": str(tmp_path / "empty")}
    monkeypatch.setattr(sys, "argv", ["sa2crq", *[paths.get(a, a) for a in args], "--redis", redis_url])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_without_redis_says_it_started_a_throwaway_server():
    done = subprocess.run(
        [sys.executable, "-m", "sa2crq.cli", "index", "versions"], capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "SA2CRQ_REDIS_URL"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "started an embedded Redis at unix://" in done.stderr
    assert "discarded when this command exits" in done.stderr
    assert done.stdout.strip() == "no index versions in Redis"


def test_prefixes_are_independent_indexes(index, redis_client, small_store, artifact, renamed):
    other = RedisIndex(redis_client, prefix="staging")
    other.publish(small_store, activate=True, progress=False)
    assert index.active() is None and index.versions() == []
    index.publish_artifact(renamed("prod"), activate=True, progress=False)
    assert other.active() == artifact.version and index.active() == f"{artifact.version}-prod"
    assert index.gc(keep=0) == [] and other.gc(keep=0) == []
    assert all(k.startswith(b"staging:") for k in redis_client.scan_iter(match=f"*{{{artifact.version}}}*"))


def test_publish_round_trips_unusual_item_ids(index, artifact, renamed):
    """Ids pass through JSON in Python and in Redis's Lua (cjson): quotes, slashes, unicode, controls."""
    odd = np.array([f'{i}/"é\\\n\t日本 {i}' if i % 3 else str(i) for i in range(len(artifact.item_ids))])
    art = dataclasses.replace(renamed("odd"), item_ids=odd)
    index.publish_artifact(art, activate=True, progress=False)
    assert_matches_artifact(index, art)
    loaded, _ = index.load_trie()
    assert sorted(loaded.item(r) for r in range(loaded.num_items)) == sorted(odd.tolist())


def test_cli_malformed_redis_url_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["sa2crq", "index", "versions", "--redis", "localhost:6379"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert "redis://" in capsys.readouterr().err


def test_publish_clears_leftovers_of_an_interrupted_gc(index, small_store, artifact):
    """gc died after unmarking a version and deleting some of its keys: republishing starts clean."""
    index.publish(small_store, progress=False)
    k = index.keys.of(artifact.version)
    index.r.delete(k.complete, k.meta, k.snapshot)  # what a gc killed mid-way leaves
    index.r.hset(k.sid, "99-99", '["stale"]')
    assert index.publish(small_store, activate=True, progress=False).published
    assert_matches_artifact(index, artifact)
    assert index.items_of([(99, 99)]) == [[]]
