"""Quantizers: determinism, ACRQ's frozen anchors, SARQ direction, save/load."""

import numpy as np
import pytest
import torch

from indexer.data.synthetic import SyntheticConfig, generate
from indexer.quantizers import ACRQ, REGISTRY, QuantizerConfig, load_quantizer
from indexer.quantizers.base import anchor_count, anchor_items, default_codebook_sizes, default_extension
from indexer.sarq import SARQConfig
from indexer.split import head_mask
from sidcore.errors import DataError

SMALL = QuantizerConfig(sizes=(8, 16, 32), epochs=4, batch_size=256, latent_dim=8, hidden=(32,), seed=3, extension=0.25)


@pytest.fixture(scope="module")
def data():
    synth = generate(SyntheticConfig(num_items=2000, dim=16, seed=0))
    return synth.catalog.vectors, head_mask(synth.catalog.popularity)


@pytest.mark.parametrize("name", ["rq-kmeans", "rq-vae", "acrq", "acrq-kmeans"])
def test_same_seed_same_codes(data, name):
    x, head = data
    runs = [REGISTRY[name](SMALL, SARQConfig()).fit(x, head, progress=False) for _ in range(2)]
    a, b = (q.encode(x, head=head) for q in runs)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(runs[0].lengths(a), runs[1].lengths(b))
    other = REGISTRY[name](QuantizerConfig(**{**SMALL.__dict__, "seed": 4})).fit(x, head, progress=False)
    assert not np.array_equal(other.encode(x, head=head), a)


class _SnapshotACRQ(ACRQ):
    """Records the anchors as stage 1 left them, just before stage 2 starts."""

    def _init_tail(self, z):
        self.stage1 = [book.detach().clone() for book in self.net.codebooks]
        super()._init_tail(z)


def test_acrq_anchors_frozen_and_tail_uses_extension(data):
    x, head = data
    q = _SnapshotACRQ(SMALL, SARQConfig()).fit(x, head, progress=False)
    anchors = q.net.anchors
    assert q.sizes == (10, 20, 40)  # 25% extension per layer
    for layer, (before, book) in enumerate(zip(q.stage1, q.net.codebooks)):
        a = anchors[layer]
        assert torch.equal(before[:a], book.detach()[:a]), f"anchor rows of layer {layer + 1} moved"
        assert not torch.equal(before[a:], book.detach()[a:]), f"extension of layer {layer + 1} never trained"
    codes = q.encode(x, head=head)
    uses_ext = (codes >= np.asarray(anchors)).any(axis=1)
    assert not uses_ext[head].any()
    assert uses_ext[~head].mean() > 0.2


def test_acrq_kmeans_anchors_are_rq_kmeans_on_the_anchors_and_tail_uses_extension(data):
    x, head = data
    q = REGISTRY["acrq-kmeans"](SMALL, SARQConfig()).fit(x, head, progress=False)
    assert q.sizes == (10, 20, 40)  # 25% extension per layer
    anchors = anchor_items(head, SMALL.anchor_share, SMALL.seed)
    stage1 = REGISTRY["rq-kmeans"](SMALL).fit(x[anchors], np.ones(int(anchors.sum()), dtype=bool), progress=False)
    for layer, (before, book) in enumerate(zip(stage1.codebooks, q.codebooks)):
        np.testing.assert_array_equal(book[: SMALL.sizes[layer]], before, err_msg=f"anchor rows of layer {layer + 1} differ")
    codes = q.encode(x, head=head)
    uses_ext = (codes >= np.asarray(SMALL.sizes)).any(axis=1)
    assert not uses_ext[head].any()
    assert uses_ext[~head].mean() > 0.2
    again = q.encode(x)  # cold start: no head restriction, the head may reach the extension too
    np.testing.assert_array_equal(again[~head], codes[~head])
    with pytest.raises(DataError, match="strictly increasing"):
        REGISTRY["acrq-kmeans"](QuantizerConfig(sizes=(16, 16, 32))).fit(x, head, progress=False)


def test_acrq_extension_grows_with_the_tail(data):
    assert default_extension(6404, 10455) == 0.25  # games: the head is 38% of the catalog, the paper's quarter
    assert default_extension(340, 4843) == pytest.approx(3.561, abs=1e-3)  # scifact: 6.6%, the tail gets codewords
    assert default_extension(1000, 4000) == 0.25 and default_extension(1000, 4400) == pytest.approx(1.1)
    assert default_extension(1, 10**6) == 4.0
    x, head = data
    small_head = head & (np.cumsum(head) <= 50)  # a head of 50 items, the rest tail: the cap of 4x applies
    auto = QuantizerConfig(**{**SMALL.__dict__, "extension": None, "anchor_share": 0.0})
    assert ACRQ(auto).fit(x, small_head, progress=False).sizes == (40, 80, 160)
    assert ACRQ(SMALL).fit(x, small_head, progress=False).sizes == (10, 20, 40)
    # topped up to a fifth of the catalog (400 anchors against 1,600 others), the quarter applies again
    topped = QuantizerConfig(**{**SMALL.__dict__, "extension": None, "anchor_share": 0.2})
    assert ACRQ(topped).fit(x, small_head, progress=False).sizes == (10, 20, 40)


def test_anchor_items_top_a_small_head_up_with_a_seeded_tail_sample(data):
    _, head = data
    small_head = head & (np.cumsum(head) <= 50)
    anchors = anchor_items(small_head, 0.2, seed=0)
    assert anchors.sum() == 400 and anchors[small_head].all()
    np.testing.assert_array_equal(anchors, anchor_items(small_head, 0.2, seed=0))
    assert not np.array_equal(anchors, anchor_items(small_head, 0.2, seed=1))
    np.testing.assert_array_equal(anchor_items(small_head, 0.0, seed=0), small_head)
    np.testing.assert_array_equal(anchor_items(head, 0.01, seed=0), head)  # a head above the share is left alone
    # the anchors grow to the last codebook's size, so k-means can place every codeword
    assert anchor_items(small_head, 0.2, seed=0, last_layer=640).sum() == 640
    assert anchor_items(small_head, 0.0, seed=0, last_layer=640)[small_head].all()
    assert anchor_items(small_head, 0.0, seed=0, last_layer=10**6).all()  # never more than the catalog
    np.testing.assert_array_equal(anchor_items(head, 0.2, seed=0, last_layer=int(head.sum())), head)
    assert anchor_count(16_859, 6_404, 0.2, 2048) == 6_404  # games: the head, 38%, is above both
    assert anchor_count(5_183, 340, 0.2, 2048) == 2048  # scifact: the last layer, above a fifth (1,037)
    assert anchor_count(5_183, 340, 0.2, 1024) == 1_037


def test_acrq_needs_increasing_sizes(data):
    x, head = data
    with pytest.raises(DataError, match="strictly increasing"):
        ACRQ(QuantizerConfig(sizes=(16, 16, 32))).fit(x, head, progress=False)


def _mean_lengths(q, x, head):
    lengths = q.lengths(q.encode(x, head=head))
    return lengths[head].mean(), lengths[~head].mean()


@pytest.mark.parametrize("name", ["rq-kmeans", "rq-vae", "acrq-kmeans"])
def test_sarq_direction(data, name):
    x, head = data
    dense_longer = REGISTRY[name](SMALL, SARQConfig()).fit(x, head, progress=False)
    h, t = _mean_lengths(dense_longer, x, head)
    assert t < h, f"paper's direction: tail {t:.2f} should be shorter than head {h:.2f}"
    budget = float(np.median(dense_longer.budgets))
    dense_shorter = REGISTRY[name](SMALL, SARQConfig(budget=budget, direction="dense-shorter")).fit(x, head, progress=False)
    h, t = _mean_lengths(dense_shorter, x, head)
    assert h < t, f"reverse direction: head {h:.2f} should be shorter than tail {t:.2f}"


@pytest.mark.parametrize("name", ["rq-kmeans", "acrq", "acrq-kmeans"])
def test_save_load_encodes_identically(tmp_path, data, name):
    x, head = data
    q = REGISTRY[name](SMALL, SARQConfig()).fit(x, head, progress=False)
    q.save(tmp_path)
    again = load_quantizer(tmp_path)
    codes = q.encode(x, head=head)
    np.testing.assert_array_equal(again.encode(x, head=head), codes)
    np.testing.assert_array_equal(again.lengths(codes), q.lengths(codes))
    np.testing.assert_allclose(again.reconstruct(codes, q.lengths(codes)), q.reconstruct(codes, q.lengths(codes)))


def test_default_codebook_sizes_fit_the_catalog():
    assert default_codebook_sizes(16_859) == (512, 1024, 2048)  # games: the cap
    assert default_codebook_sizes(5_183) == (512, 1024, 2048)  # scifact: 2.5 documents per last-layer codeword
    assert default_codebook_sizes(2_000) == (128, 256, 512)
    assert default_codebook_sizes(2_000, items_per_codeword=5) == (64, 128, 256)
    assert default_codebook_sizes(10**6) == (512, 1024, 2048)
    assert QuantizerConfig().resolved(5_183).sizes == (512, 1024, 2048)
    assert QuantizerConfig(sizes=(4, 8)).resolved(5_183).sizes == (4, 8)
    for n in (10, 100, 2_000, 50_000):
        sizes = default_codebook_sizes(n)
        assert sizes[-1] <= max(n, 32) and sizes[1] == 2 * sizes[0] and sizes[2] == 4 * sizes[0]


@pytest.mark.parametrize("method", ["sa2crq", "sa2crq-kmeans"])
def test_a_build_without_sizes_takes_them_from_its_catalog(tmp_path, method):
    from indexer.build import BuildConfig, build_index
    from model_store import Store
    from sidcore.index.artifact import load_index

    catalog = generate(SyntheticConfig(num_items=1200, dim=16, seed=3)).catalog
    store = Store(tmp_path)
    version, _ = build_index(catalog, BuildConfig(method=method, quantizer=QuantizerConfig(epochs=2)), store, progress=False)
    art = load_index(store, version)
    expected = QuantizerConfig().resolved(len(catalog)).sizes
    assert art.config["quantizer"]["sizes"] == list(expected)  # the manifest records what was used
    assert art.sizes[0] >= expected[0] and len(art.sizes) == 3  # (+ ACRQ's extension codewords)


@pytest.mark.parametrize("name", ["rq-kmeans", "acrq-kmeans"])
def test_max_group_bounds_every_shortened_sid(tmp_path, data, name):
    x, head = data
    free = REGISTRY[name](SMALL, SARQConfig()).fit(x, head, progress=False)
    codes = free.encode(x, head=head)
    lengths = free.lengths(codes)

    def largest_short_group(lengths):
        short = lengths < codes.shape[1]
        _, n = np.unique([tuple(c[:length]) for c, length in zip(codes[short], lengths[short])], axis=0, return_counts=True)
        return n.max()

    assert largest_short_group(lengths) > 3  # unbounded SARQ shares short IDs widely on this catalog
    bounded = REGISTRY[name](SMALL, SARQConfig(max_group=3)).fit(x, head, progress=False)
    with pytest.raises(DataError, match="count_catalog"):
        bounded.lengths(codes)
    bounded.count_catalog(codes)
    capped = bounded.lengths(codes)
    assert largest_short_group(capped) <= 3
    assert (capped >= lengths).all() and capped.mean() > lengths.mean()
    bounded.save(tmp_path)
    np.testing.assert_array_equal(load_quantizer(tmp_path).lengths(codes), capped)  # inserts see the same counts


def test_an_index_saved_before_max_group_keeps_its_unbounded_lengths(tmp_path, data):
    import json

    x, head = data
    q = REGISTRY["acrq-kmeans"](SMALL, SARQConfig()).fit(x, head, progress=False)
    q.save(tmp_path)
    meta = json.loads((tmp_path / "quantizer.json").read_text())
    del meta["sarq"]["max_group"]  # as written by earlier versions
    (tmp_path / "quantizer.json").write_text(json.dumps(meta))
    old = load_quantizer(tmp_path)
    codes = q.encode(x, head=head)
    assert old.sarq.max_group is None
    np.testing.assert_array_equal(old.lengths(codes), q.lengths(codes))
