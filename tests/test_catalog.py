"""Loaders and the synthetic generator."""

import json

import numpy as np
import pytest

from indexer.data.catalog import count_popularity, load_items, load_vectors
from indexer.data.synthetic import SyntheticConfig, generate, sample_sequences, write
from sidcore.errors import DataError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_items_layouts(tmp_path):
    cat = load_items(_jsonl(tmp_path / "a.jsonl", [{"item_id": 3, "title": "Red Kettle", "text": "boils"}, {"item_id": "x", "text": "Blue"}]))
    assert cat.item_ids == ["3", "x"]
    assert cat.texts == ["Red Kettle. boils", "Blue"]
    beir = load_items(_jsonl(tmp_path / "c.jsonl", [{"_id": "4983", "title": "T", "text": "abstract"}]))
    assert beir.item_ids == ["4983"] and beir.texts == ["T. abstract"]
    given = load_items(_jsonl(tmp_path / "p.jsonl", [{"item_id": 1, "title": "a", "popularity": 7}]))
    assert given.popularity.tolist() == [7.0]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"title": "no id"}], "missing field 'item_id'"),
        ([{"item_id": 1}], "neither 'title' nor 'text'"),
        ([], "catalog is empty"),
        ([{"item_id": 1, "title": "a"}, {"item_id": 1, "title": "b"}], "duplicate item_id '1'"),
        ([{"item_id": 1, "title": "a", "popularity": -1}], "popularity"),
    ],
)
def test_bad_items_are_named(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        load_items(_jsonl(tmp_path / "bad.jsonl", rows))


def test_bad_json_line_is_located(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"item_id": 1, "title": "a"}\n{oops\n')
    with pytest.raises(DataError, match="bad.jsonl:2: not valid JSON"):
        load_items(p)
    with pytest.raises(DataError, match="file not found"):
        load_items(tmp_path / "missing.jsonl")


def test_popularity_from_sequences_and_qrels(tmp_path):
    cat = load_items(_jsonl(tmp_path / "i.jsonl", [{"item_id": i, "title": f"t{i}"} for i in range(4)]))
    seqs = _jsonl(tmp_path / "s.jsonl", [{"user_id": 0, "item_ids": [0, 1, 1, 2]}, {"user_id": 1, "item_ids": [1, 3, 99]}])
    assert count_popularity(cat, seqs).tolist() == [1, 3, 1, 1]  # unknown item 99 ignored
    assert count_popularity(cat, seqs, holdout_last=1).tolist() == [1, 3, 0, 1]
    qrels = tmp_path / "q.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\t2\t1\nq2\t2\t1\nq3\t0\t1\n")
    assert count_popularity(cat, qrels).tolist() == [1, 0, 2, 0]


def test_vectors_are_checked(tmp_path):
    good = np.ones((3, 4), dtype=np.float32)
    np.save(tmp_path / "v.npy", good)
    assert load_vectors(tmp_path / "v.npy", 3).shape == (3, 4)
    with pytest.raises(DataError, match="3 rows but the catalog has 5"):
        load_vectors(tmp_path / "v.npy", 5)
    good[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", good)
    with pytest.raises(DataError, match="NaN or inf in 1 rows"):
        load_vectors(tmp_path / "nan.npy", 3)


def test_synthetic_is_seeded_long_tailed_and_loadable(tmp_path):
    a = generate(SyntheticConfig(num_items=3000, dim=16, seed=7))
    b = generate(SyntheticConfig(num_items=3000, dim=16, seed=7))
    c = generate(SyntheticConfig(num_items=3000, dim=16, seed=8))
    assert a.catalog.texts == b.catalog.texts
    np.testing.assert_array_equal(a.catalog.vectors, b.catalog.vectors)
    assert a.catalog.texts != c.catalog.texts
    pop = np.sort(a.catalog.popularity)[::-1]
    assert pop[: len(pop) // 5].sum() > 0.6 * pop.sum()  # a long tail: top 20% hold most traffic
    np.testing.assert_allclose(np.linalg.norm(a.catalog.vectors, axis=1), 1.0, rtol=1e-5)
    assert sample_sequences(a, 50, seed=1) == sample_sequences(b, 50, seed=1)
    paths = write(a, tmp_path, num_users=100)
    loaded = load_items(paths["items"])
    assert loaded.texts == a.catalog.texts
    assert count_popularity(loaded, paths["sequences"]).sum() > 0
