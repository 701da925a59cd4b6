"""Collaborative item vectors: co-purchased items end up close, items that follow the same items
end up close in the ``after`` view, items without history at zero, and an index built on text +
collaborative vectors takes cold-start items by their text alone."""

import numpy as np
import pytest

from indexer.build import BuildConfig, build_index
from indexer.coldstart import add_items
from indexer.collab import DEFAULT_VIEWS, collaborative_vectors
from indexer.data.catalog import Catalog
from indexer.quantizers import QuantizerConfig, load_quantizer
from model_store import Store
from sidcore.errors import DataError


def two_communities(n_users: int = 200, seed: int = 0):
    """Items a0..a9 are bought together, b0..b9 together; c0 is never bought."""
    rng = np.random.default_rng(seed)
    items = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)] + ["c0"]
    seqs = [list(rng.choice(items[:10] if u % 2 else items[10:20], size=4, replace=False)) for u in range(n_users)]
    return items, seqs


def test_co_purchased_items_share_a_direction_and_unbought_ones_get_zeros():
    items, seqs = two_communities()
    v, stats = collaborative_vectors(items, seqs, dim=4, views=("together",))
    assert v.shape == (21, 4) and v.dtype == np.float32
    assert np.allclose(v[20], 0) and stats["items_with_vectors"] == 20
    assert np.allclose(np.linalg.norm(v[:20], axis=1), 1, atol=1e-5)
    sim = v[:20] @ v[:20].T
    within = np.concatenate([sim[:10, :10][~np.eye(10, dtype=bool)], sim[10:, 10:][~np.eye(10, dtype=bool)]])
    across = sim[:10, 10:].ravel()
    assert within.mean() > across.mean() + 0.5


def test_the_directed_views_put_items_with_the_same_neighbours_together_and_know_direction():
    """Every history is [p, a] or [q, b]: the a's follow the p's, the b's the q's, and no two a's
    (or b's) ever share a history. Nothing comes before a p or a q, nothing after an a or a b."""
    rng = np.random.default_rng(0)
    ps, a, qs, b = ([f"{k}{i}" for i in range(6)] for k in "paqb")
    items = ps + a + qs + b
    seqs = [[str(rng.choice(ps)), str(rng.choice(a))] if u % 2 else [str(rng.choice(qs)), str(rng.choice(b))] for u in range(400)]
    v, stats = collaborative_vectors(items, seqs, dim=4, views=("together", "after", "before"))
    assert v.shape == (24, 12) and stats["dim"] == 12 and stats["views"] == ["together", "after", "before"]
    together, after, before = v[:, :4], v[:, 4:8], v[:, 8:]
    assert np.allclose(after[:6], 0) and np.allclose(after[12:18], 0)  # p's and q's follow nothing
    assert np.allclose(before[6:12], 0) and np.allclose(before[18:], 0)  # nothing follows a's and b's
    assert stats["after"]["items_with_vectors"] == stats["before"]["items_with_vectors"] == 12
    assert stats["together"]["items_with_vectors"] == 24
    assert np.allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    off = ~np.eye(6, dtype=bool)
    sim = after @ after.T
    assert sim[6:12, 6:12][off].mean() > sim[6:12, 18:].mean() + 0.5  # the a's together, apart from the b's
    sim = before @ before.T
    assert sim[:6, :6][off].mean() > sim[:6, 12:18].mean() + 0.5  # the p's together, apart from the q's
    assert np.allclose(collaborative_vectors(items, seqs, dim=4, views=("together",))[0], together)  # a view's block alone is the same
    assert np.array_equal(collaborative_vectors(items, seqs, dim=4)[0], v)  # the default: all three


def test_the_reach_bounds_how_far_after_a_directed_pair_counts():
    """Histories [p, x, a]: with reach 1 only x follows p, so p has no pair with a; with reach 2 it does."""
    items = ["p", "x", "a", "y"]
    seqs = [["p", "x", "a"]] * 3 + [["y", "x"]] * 2
    near = collaborative_vectors(items, seqs, dim=1, views=("after",), reach=1)[1]
    far = collaborative_vectors(items, seqs, dim=1, views=("after",), reach=2)[1]
    assert near["after"]["pairs"] == 3 and far["after"]["pairs"] == 4  # (p,x) (x,a) (y,x), then (p,a) too


@pytest.mark.parametrize("views", [(), ("together", "together"), ("next",)])
def test_unknown_empty_or_repeated_views_are_refused(views):
    with pytest.raises(DataError, match="collaborative views"):
        collaborative_vectors(["x", "y", "z"], [["x", "y"]], dim=1, views=views)
    with pytest.raises(DataError, match="collaborative views"):
        BuildConfig(collab_views=views)


def test_without_co_occurrences_it_says_so():
    with pytest.raises(DataError, match="no two catalog items share a training sequence"):
        collaborative_vectors(["x", "y", "z"], [["x"], ["y"]], dim=1)


def test_an_index_on_text_and_collaborative_vectors_takes_cold_start_items_by_text(tmp_path, index, synthetic):
    cat = synthetic.catalog
    rng = np.random.default_rng(0)
    seqs = [list(rng.choice(cat.item_ids[:300], size=5, replace=False)) for _ in range(400)]
    store = Store(tmp_path)
    cfg = BuildConfig(method="rq-kmeans", quantizer=QuantizerConfig(sizes=(8, 16, 32)), collab_weight=1.0, collab_dim=8)
    with pytest.raises(DataError, match="needs the training interaction sequences"):
        build_index(cat, cfg, store, progress=False)
    version, _ = build_index(cat, cfg, store, progress=False, sequences=seqs)
    v = store.open(version, kind="index")
    width = 8 * len(DEFAULT_VIEWS)  # one 8-wide block per view
    assert v.manifest.config["dim"] == cat.vectors.shape[1] + width and v.manifest.config["collab"]["items_with_vectors"] == 300
    index.publish(store, version, activate=True, progress=False)
    new = Catalog(["new-0"], ["a new item"], np.ones(1), cat.vectors[5:6])  # text-sized vector, like item 5's
    result = add_items(index, new, progress=False)
    q = load_quantizer(v.path)
    padded = np.concatenate([cat.vectors[5:6], np.zeros((1, width), dtype=np.float32)], 1)
    codes = q.encode(padded, head=np.zeros(1, dtype=bool))
    assert dict(result.items)["new-0"] == tuple(int(c) for c in codes[0])
    with pytest.raises(DataError, match="expects 16"):
        add_items(index, Catalog(["new-1"], ["x"], np.ones(1), np.ones((1, 5), dtype=np.float32)), progress=False)
