"""model_store: sealed versions, checksums, active pointer."""

import json

import pytest

from model_store import Store, StoreError


def _version(store, payload=b"hello", kind="index"):
    with store.new_version(kind, {"k": 1}) as d:
        (d / "a.bin").write_bytes(payload)
        (d / "sub").mkdir()
        (d / "sub" / "b.json").write_text("{}")
    return store.last_version


def test_round_trip_and_active(tmp_path):
    store = Store(tmp_path)
    v = _version(store)
    opened = store.open(v, kind="index")
    assert opened.file("a.bin").read_bytes() == b"hello"
    assert sorted(opened.manifest.files) == ["a.bin", "sub/b.json"]
    assert store.active("index") is None and store.resolve("index") == v
    store.activate("index", v)
    assert store.active("index") == v
    with pytest.raises(StoreError, match="is a 'index', not a 'decoder'"):
        store.open(v, kind="decoder")


def test_flipped_byte_is_refused(tmp_path):
    store = Store(tmp_path)
    v = _version(store)
    path = tmp_path / v / "a.bin"
    data = bytearray(path.read_bytes())
    data[2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt: checksum mismatch in a.bin"):
        store.open(v)
    with pytest.raises(StoreError, match="corrupt"):
        store.activate("index", v)


def test_partial_versions_are_refused(tmp_path):
    store = Store(tmp_path)
    v = _version(store)
    (tmp_path / v / "sub" / "b.json").unlink()
    with pytest.raises(StoreError, match="partial: missing sub/b.json"):
        store.open(v)
    w = _version(store)
    (tmp_path / w / "manifest.json").unlink()
    with pytest.raises(StoreError, match="partial: it has no manifest.json"):
        store.open(w)
    x = _version(store)
    (tmp_path / x / "intruder").write_text("x")
    with pytest.raises(StoreError, match="not in its manifest: intruder"):
        store.open(x)


def test_failed_write_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.new_version("index") as d:
            (d / "a.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    assert store.versions() == []


def test_manifest_is_pydantic_json(tmp_path):
    store = Store(tmp_path)
    v = _version(store)
    m = json.loads((tmp_path / v / "manifest.json").read_text())
    assert m["kind"] == "index" and m["version"] == v and m["config"] == {"k": 1}
    assert len(m["files"]["a.bin"]) == 64
