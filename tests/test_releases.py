"""Releases in Redis: fingerprints, decoders through Redis, verified pairs, activation, rollback,
cold-start items carried across releases, and gc that spares what replicas serve."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from indexer.coldstart import activate_release, add_items, carry_over, rollback_release
from indexer.data.catalog import Catalog
from model_store import Store, StoreError
from sa2crq.cli import main
from sidcore.errors import ConflictError, NotFoundError
from sidcore.index.artifact import IncompatiblePair, load_index
from sidcore.index.redis_index import RedisIndex


@pytest.fixture
def releases(redis_client, tiny_stack, retrained_pair, resized_pair):
    """A Redis with three releases published: a (the tiny stack, active), b (retrained), c (resized)."""
    index = RedisIndex(redis_client)
    a = index.publish_release(tiny_stack.store, name="a", activate=True, progress=False)
    b = index.publish_release(retrained_pair[0], name="b", progress=False)
    c = index.publish_release(resized_pair[0], name="c", progress=False)
    return index, a, b, c


def test_fingerprints_name_the_quantizer_not_the_version(tiny_stack, retrained_pair, artifact):
    art = tiny_stack.art
    assert len(art.fingerprint) == 16
    assert art.fingerprint == tiny_stack.decoder.spec.index_fingerprint  # the decoder records what it was trained on
    assert retrained_pair[1].fingerprint != art.fingerprint  # same sizes, another seed: another quantizer
    assert retrained_pair[1].sizes == art.sizes
    assert load_index(tiny_stack.store, art.version).fingerprint == art.fingerprint


def test_a_decoder_travels_through_redis_verified(redis_client, tiny_stack, tmp_path):
    index = RedisIndex(redis_client)
    version = index.publish_decoder(tiny_stack.store)
    assert version == tiny_stack.decoder.version
    info = index.decoder_info(version)
    assert info.complete and info.fingerprint == tiny_stack.art.fingerprint and info.sizes == tiny_stack.art.sizes
    cache = Store(tmp_path / "cache")
    fetched = index.fetch_decoder(version, cache)
    original = tiny_stack.store.open(version)
    assert fetched.manifest.files == original.manifest.files
    for name in original.manifest.files:
        assert (fetched.path / name).read_bytes() == (original.path / name).read_bytes()


def test_a_corrupt_decoder_chunk_is_refused_and_installs_nothing(redis_client, tiny_stack, tmp_path):
    index = RedisIndex(redis_client)
    version = index.publish_decoder(tiny_stack.store)
    k = index.keys.decoder(version)
    chunk = bytearray(redis_client.hget(k.chunk, "0"))
    chunk[len(chunk) // 2] ^= 0xFF
    redis_client.hset(k.chunk, "0", bytes(chunk))
    cache = Store(tmp_path / "cache")
    with pytest.raises(StoreError, match="checksum mismatch"):
        index.fetch_decoder(version, cache)
    assert cache.versions() == [] and not any(p.name.startswith(".staging") for p in cache.root.iterdir())


def test_a_mismatched_pair_is_refused_naming_both_fingerprints(releases, tiny_stack, retrained_pair):
    index, a, b, _ = releases
    with pytest.raises(IncompatiblePair) as e:
        index.create_release(b.index_version, a.decoder_version, "wrong")
    assert a.fingerprint in str(e.value) and b.fingerprint in str(e.value)
    assert index.release("wrong", required=False) is None
    # an index of another quantizer cannot be activated under the active decoder either
    with pytest.raises(IncompatiblePair):
        index.activate(b.index_version)
    assert index.active_release().name == "a" and index.active() == a.index_version


def test_cli_refuses_a_mismatched_pair_with_exit_2(releases, redis_url, tiny_stack, retrained_pair, tmp_path, capsys):
    index, a, b, _ = releases
    mixed = tmp_path / "mixed"  # a store holding a's decoder and b's index
    shutil.copytree(tiny_stack.store.root / a.decoder_version, mixed / a.decoder_version)
    shutil.copytree(retrained_pair[0].root / b.index_version, mixed / b.index_version)
    with pytest.raises(SystemExit) as done:
        main(["release", "publish", "--store", str(mixed), "--decoder", a.decoder_version,
              "--index-version", b.index_version, "--redis", redis_url, "--quiet"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert a.fingerprint in err and b.fingerprint in err


def test_compatible_index_activation_becomes_a_release(releases, tiny_stack):
    index, a, _, _ = releases
    copy = dataclasses.replace(tiny_stack.art, version=f"{tiny_stack.art.version}-copy")  # same quantizer, another id
    index.publish_artifact(copy, progress=False)
    assert index.activate(copy.version) == a.index_version
    now = index.active_release()
    assert (now.index_version, now.decoder_version) == (copy.version, a.decoder_version) and now.name != "a"


def test_activate_and_rollback_move_index_and_decoder_together(releases):
    index, a, b, c = releases
    assert index.activate_release("b").name == "a"
    assert (index.active(), index.active_release().name) == (b.index_version, "b")
    assert index.activate_release("c").name == "b"
    assert index.rollback().name == "b"
    assert (index.active(), index.active_release().decoder_version) == (b.index_version, b.decoder_version)
    with pytest.raises(NotFoundError):
        index.activate_release("nope")
    with pytest.raises(ConflictError):
        index.create_release(a.index_version, a.decoder_version, "b")  # a name stands for one pair


def test_cold_start_items_are_carried_to_the_next_release(releases, tiny_stack):
    index, a, b, _ = releases
    vectors = tiny_stack.catalog.vectors[:3] + 0.01
    new = Catalog(["cold-0", "cold-1", "cold-2"], ["new one", "new two", "new three"], np.array([3.0, 2.0, 1.0]), vectors.astype(np.float32))
    add_items(index, new, progress=False)
    assert set(index.inserted_items(a.index_version)) == {"cold-0", "cold-1", "cold-2"}
    previous, carried = activate_release(index, "b")
    assert previous.name == "a" and carried == 3
    sids = index.sids_of(["cold-0", "cold-1", "cold-2"], b.index_version)
    assert all(s is not None for s in sids)  # encoded by b's quantizer
    assert carry_over(index, a.index_version, b.index_version) is None  # nothing left to carry
    _, back = rollback_release(index)
    assert back == 0 and index.active_release().name == "a"  # a has them already


def test_export_inserts_writes_a_catalog_for_the_next_build(releases, tiny_stack, redis_url, tmp_path):
    index, a, _, _ = releases
    add_items(index, Catalog(["exp-0"], ["exported"], np.array([1.0]), tiny_stack.catalog.vectors[:1]), progress=False)
    main(["index", "export-inserts", "--out", str(tmp_path / "out"), "--redis", redis_url])
    lines = (tmp_path / "out" / "items.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"exp-0"' in lines[0] and '"exported"' in lines[0]
    assert np.load(tmp_path / "out" / "vectors.npy").shape == (1, tiny_stack.catalog.vectors.shape[1])


def test_gc_spares_what_live_replicas_serve(releases):
    index, a, b, c = releases
    index.activate_release("b")
    index.activate_release("a")
    index.heartbeat("canary-1", {"release": "c", "index_version": c.index_version, "decoder_version": c.decoder_version})
    removed = index.gc(keep=0)
    assert c.index_version not in removed and c.decoder_version not in removed  # a canary still serves c
    assert {r.name for r in index.releases()} >= {"a", "c"}
    assert index.meta(c.index_version)["fingerprint"] == c.fingerprint
    index.r.delete(index.keys.replica("canary-1"))  # the canary is gone: c may go now
    removed = index.gc(keep=0)
    assert c.index_version in removed and c.decoder_version in removed and "c" in removed
    assert index.active_release().name == "a" and index.decoder_info(a.decoder_version).complete
