"""Item attributes and payloads end to end on a real Redis: declared at build, published with the
version, loaded as columns aligned with the trie, updated in place without a rebuild (replicas
replay the log to the same bytes), grown by cold-start inserts; filters evaluated on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer.build import BuildConfig, build_index
from indexer.coldstart import add_items
from indexer.data.catalog import load_items
from indexer.data.synthetic import SyntheticConfig, generate, write
from indexer.quantizers import QuantizerConfig
from model_store import Store
from sidcore.errors import DataError, NotFoundError
from sidcore.index.artifact import load_index
from sidcore.index.attributes import Attributes, Condition, Filter, FilterError, parse_attribute_option


@pytest.fixture(scope="module")
def synth():
    return generate(SyntheticConfig(num_items=1200, dim=16, seed=3))


@pytest.fixture(scope="module")
def attr_store(tmp_path_factory, synth):
    store = Store(tmp_path_factory.mktemp("attr_store"))
    cfg = BuildConfig(method="sarq", quantizer=QuantizerConfig(sizes=(8, 16, 32), epochs=3))
    version, _ = build_index(synth.with_attributes(), cfg, store, progress=False)
    store.activate("index", version)
    return store


def snapshot_values(snap, item_ids, name):
    rows = snap.trie.rows_of(item_ids)
    return [snap.attributes[name].value(int(r)) for r in rows]


def test_load_items_reads_declared_attributes_and_fields(tmp_path, synth):
    paths = write(synth, tmp_path)
    cat = load_items(paths["items"], parse_attribute_option("category,brand,price:numeric,available"), ("title", "nope"))
    assert cat.attributes.specs == synth.with_attributes().attributes.specs
    assert [cat.attributes["price"].value(i) for i in range(5)] == synth.attributes["price"][:5]
    assert cat.payload[0] == {"title": synth.catalog.texts[0]} and cat.fields == ("title",)
    with pytest.raises(DataError, match="cannot infer its kind"):
        load_items(paths["items"], [("missing_everywhere", None)])
    with pytest.raises(DataError, match="item_id"):
        load_items(paths["items"], [("item_id", None)])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"item_id": 1, "title": "t", "price": "cheap"}) + "\n")
    with pytest.raises(DataError, match="price.*numeric"):
        load_items(bad, [("price", "numeric")])


def test_publish_and_load_keep_every_items_attributes_and_payload(index, attr_store, synth):
    art = load_index(attr_store)
    assert art.attributes.names == ("category", "brand", "price", "available") and art.fields == ("title",)
    index.publish(attr_store, activate=True, progress=False)
    snap, last = index.load_snapshot()
    assert last == "0-0" and snap.fields == ("title",)
    assert snap.attributes.num_rows == snap.trie.num_items == len(art.item_ids)
    ids = [str(i) for i in art.item_ids]
    for name in ("category", "brand", "price", "available"):
        assert snapshot_values(snap, ids, name) == [synth.attributes[name][int(i)] for i in ids]
    assert index.payloads(art.version, ids[:3], ["title"]) == [{"title": synth.catalog.texts[int(i)]} for i in ids[:3]]
    assert index.payloads(art.version, ["nope"]) == [None]


def test_updates_in_place_and_replay_to_the_same_bytes(index, attr_store, synth, new_items):
    index.publish(attr_store, activate=True, progress=False)
    before, log_id = index.load_snapshot()
    version = before.version
    result = index.set_attributes(None, [("0", {"available": False, "price": 12.5}), ("1", {"brand": "Brand-New", "price": None})])
    assert result.items == 2 and result.log_id
    inserted = add_items(index, new_items(2), progress=False)  # cold start: rows after the others, attributes missing
    index.set_attributes(version, [(inserted.items[0][0], {"available": True, "category": "Garden"})])

    fresh, last = index.load_snapshot()
    events, replay_last = index.events_since(version, log_id)
    replayed = before.apply(events)
    assert replay_last == last and replayed.trie.num_items == fresh.trie.num_items == before.trie.num_items + 2
    for a, b in zip(fresh.attributes.columns, replayed.attributes.columns):
        assert a.values == b.values and a.data.tobytes() == b.data.tobytes()
    assert snapshot_values(fresh, ["0", "1"], "available") == [False, synth.attributes["available"][1]]
    assert snapshot_values(fresh, ["0", "1"], "price") == [12.5, None]
    assert snapshot_values(fresh, ["1"], "brand") == ["Brand-New"]
    new0, new1 = inserted.items[0][0], inserted.items[1][0]
    assert fresh.attributes.row(int(fresh.trie.rows_of([new1])[0])) == {}
    assert fresh.attributes.row(int(fresh.trie.rows_of([new0])[0])) == {"available": True, "category": "Garden"}


def test_bad_updates_are_refused_whole(index, attr_store, small_store):
    index.publish(attr_store, activate=True, progress=False)
    version = index.active()
    with pytest.raises(NotFoundError, match="nope"):
        index.set_attributes(None, [("0", {"price": 1.0}), ("nope", {"price": 2.0})])
    with pytest.raises(DataError, match="unknown attribute 'colour'"):
        index.set_attributes(None, [("0", {"colour": "red"})])
    with pytest.raises(DataError, match="price.*numeric"):
        index.set_attributes(None, [("0", {"price": "cheap"})])
    with pytest.raises(DataError, match="twice"):
        index.set_attributes(None, [("0", {"price": 1.0}), ("0", {"price": 2.0})])
    snap, _ = index.load_snapshot(version)
    assert snap.attributes["price"].value(int(snap.trie.rows_of(["0"])[0])) != 1.0  # nothing was written
    index.publish(small_store, activate=True, progress=False)
    with pytest.raises(DataError, match="no attributes"):
        index.set_attributes(None, [("0", {"price": 1.0})])


def test_filters_keep_what_they_say(synth):
    attrs = synth.with_attributes().attributes
    price = np.array(synth.attributes["price"])
    available = np.array(synth.attributes["available"])
    category = np.array(synth.attributes["category"])
    flt = Filter(must=(Condition.eq("available", True), Condition.range("price", gte=10, lt=50)),
                 must_not=(Condition.any_of("category", ["Books", "Toys", "Nowhere"]),))
    attrs.check(flt)
    expected = available & (price >= 10) & (price < 50) & ~np.isin(category, ["Books", "Toys"])
    assert np.array_equal(attrs.evaluate(flt), expected) and 0 < expected.sum() < len(expected)
    same = Filter(must_not=(Condition.any_of("category", ["Toys", "Books", "Nowhere"]),),
                  must=(Condition.range("price", lt=50, gte=10), Condition.any_of("available", [True])))
    assert same.canonical == flt.canonical
    assert not attrs.evaluate(Filter(must=(Condition.eq("brand", "no such brand"),))).any()
    for bad, path in [
        (Filter(must=(Condition.eq("colour", "red"),)), ("must", 0, "field")),
        (Filter(must_not=(Condition.eq("price", "cheap"),)), ("must_not", 0, "value")),
        (Filter(must=(Condition.any_of("available", [True, "yes"]),)), ("must", 0, "any", 1)),
        (Filter(must=(Condition.range("category", gt=1),)), ("must", 0, "range")),
    ]:
        with pytest.raises(FilterError) as e:
            attrs.check(bad)
        assert e.value.path == path


def test_the_http_schema_allows_the_values_the_core_accepts():
    from service.schemas import MAX_VALUE_CHARS
    from sidcore.index.attributes import MAX_CATEGORICAL_CHARS

    assert MAX_VALUE_CHARS == MAX_CATEGORICAL_CHARS


def test_missing_values_match_no_condition():
    attrs = Attributes.from_values([("price", "numeric"), ("tag", "categorical")], [{"price": 5}, {}, {"tag": "x"}])
    assert attrs.evaluate(Filter(must=(Condition.range("price", gt=0),))).tolist() == [True, False, False]
    assert attrs.evaluate(Filter(must_not=(Condition.range("price", gt=0),))).tolist() == [False, True, True]
    assert attrs.evaluate(Filter(must_not=(Condition.eq("tag", "x"),))).tolist() == [True, True, False]


def test_cli_set_attributes(monkeypatch, capsys, tmp_path, redis_url, index, attr_store):
    import sys

    from sa2crq.cli import main

    index.publish(attr_store, activate=True, progress=False)

    def run(lines: list[dict]) -> int:
        path = tmp_path / "updates.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        monkeypatch.setattr(sys, "argv", ["sa2crq", "index", "set-attributes", "--items", str(path), "--redis", redis_url])
        try:
            main()
        except SystemExit as e:
            return e.code
        return 0

    assert run([{"item_id": 5, "available": False, "price": 3.25}, {"item_id": "6", "brand": None}]) == 0
    assert "updated 2 item(s)" in capsys.readouterr().err
    snap, _ = index.load_snapshot()
    row5, row6 = (int(r) for r in snap.trie.rows_of(["5", "6"]))
    assert snap.attributes.row(row5)["available"] is False and snap.attributes.row(row5)["price"] == 3.25
    assert "brand" not in snap.attributes.row(row6)
    for lines, message in [
        ([{"item_id": 5, "colour": "red"}], "unknown attribute 'colour'"),
        ([{"item_id": "nope", "price": 1}], "not in index"),
        ([{"item_id": 5, "price": "cheap"}], "numeric"),
        ([{"price": 1}], "missing field 'item_id'"),
        ([{"item_id": 5}], "no attribute to set"),
    ]:
        assert run(lines) == 2
        assert message in capsys.readouterr().err
