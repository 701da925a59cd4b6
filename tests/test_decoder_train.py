"""Decoder training: leave-one-out data, whole-sequence rows, item views, the SID-embedding prior,
checkpoints that resume (and refuse a changed run), a local base checkpoint, and a MiniLM-prompted
decoder that serves what it validated."""

import dataclasses
import json
from collections import Counter

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from indexer.build import BuildConfig, build_index
from indexer.collab import DIM as COLLAB_DIM
from indexer.collab import collaborative_vectors
from indexer.data.catalog import count_popularity, load_items
from indexer.data.synthetic import SyntheticConfig, generate, write
from indexer.quantizers import QuantizerConfig, load_quantizer
from indexer.training.config import TrainConfig
from indexer.training.examples import Example, TrainingData, extend_sequences, load_training_data, text_views
from indexer.training.options import train_config, train_options
from indexer.training.rows import RowMaker
from indexer.training.trainer import _Run, codebook_init, collab_init, item_views, later_pairs, train_decoder
from indexer.training.validation import Validation, first_best, sample_cases
from model_store import Store
from sidcore.decoder.bundle import DecoderSpec, load_decoder, make_builder
from sidcore.decoder.model import PromptInputs, TinyConfig, embed_inputs, new_tiny_model
from sidcore.decoder.prompt import PromptConfig
from sidcore.decoder.tokenizer import extend_with_sid_tokens, train_text_tokenizer
from sidcore.engines.torch_engine import TorchEngine
from sidcore.errors import DataError
from sidcore.index import Trie, TrieMask
from sidcore.index.artifact import load_index

TINY = TinyConfig(hidden_size=64, layers=1, heads=2, kv_heads=1, head_dim=32, intermediate_size=128)
FAST = dict(batch_tokens=1024, tiny=TINY, text_vocab=300, val_cases=30, views=False)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    d = tmp_path_factory.mktemp("dec")
    synth = generate(SyntheticConfig(num_items=300, dim=16, seed=4))
    paths = write(synth, d / "data", num_users=120, seed=4)
    cat = load_items(paths["items"]).with_vectors(synth.catalog.vectors)
    cat = cat.with_popularity(count_popularity(cat, paths["sequences"]))
    store = Store(d / "store")
    build_index(cat, BuildConfig(method="rq-kmeans", quantizer=QuantizerConfig(sizes=(4, 8, 16))), store, progress=False)
    data = load_training_data(d / "data")
    data = TrainingData(cat, data.sequences, data.queries, data.valid, data.test)
    return d, store, load_index(store), data


def test_leave_one_out_examples(indexed):
    d, _, _, data = indexed
    items = [str(i) for i in json.loads((d / "data" / "sequences.jsonl").read_text().splitlines()[0])["item_ids"]]
    assert data.sequences[0] == tuple(items[:-2])
    assert data.valid[0] == Example(None, tuple(items[:-2]), items[-2])
    assert data.test[0] == Example(None, tuple(items[:-1]), items[-1])


def _maker(art, prompt: PromptConfig):
    tok = train_text_tokenizer(["red kettle", "blue hose"], 100)
    base = extend_with_sid_tokens(tok, art.sizes)
    spec = DecoderSpec(art.version, art.sizes, base, prompt, "tiny")
    codes = {item: spec.codes(art.codes[r, : art.lengths[r]]) for r, item in enumerate(art.item_ids.tolist())}
    return RowMaker(make_builder(spec, tok), codes, {}, spec.vocab.end_local), spec, tok


def test_a_history_row_trains_every_next_item(indexed):
    """One row per history: each item after the first is a target of its preceding position, and its
    <item> marker carries the previous item's content."""
    _, _, art, _ = indexed
    maker, spec, tok = _maker(art, PromptConfig(history_mode="sid", item_content="id"))
    a, b, c = art.item_ids[3], art.item_ids[5], art.item_ids[7]
    row = maker.sequence([a, b, c])
    item_id = tok.convert_tokens_to_ids("<item>")
    markers = [i for i, t in enumerate(row.prompt.ids) if t == item_id]
    assert len(markers) == 3 and len(row.labels) == len(row.prompt)
    end = spec.vocab.end_local
    for n, target in ((1, b), (2, c)):
        at, codes = markers[n], maker.codes[target]
        assert list(row.labels[at : at + len(codes) + 1]) == codes + [end]  # marker -> c1, c1 -> c2, ..., last -> <sid_end>
        assert [row.prompt.ids[at + 1 + j] - spec.base for j in range(len(codes))] == codes
    assert all(x == -1 for x in row.labels[: markers[1]])  # the first item is context only
    assert dict(row.prompt.content) == {markers[1]: a, markers[2]: b}
    assert row.targets == ((markers[1], b), (markers[2], c))  # where the next-item loss applies


def test_a_query_row_targets_the_sid_then_end(indexed):
    _, _, art, _ = indexed
    maker, spec, tok = _maker(art, PromptConfig(query_tokens=8, soft_vectors=2))
    target = art.item_ids[9]
    row = maker.query("red kettle", target)
    codes = maker.codes[target]
    ids = row.prompt.ids
    assert ids[:3] == (*tok.convert_tokens_to_ids(["<query>", "<soft>", "<soft>"]),)
    assert [t for t in row.labels if t >= 0] == codes + [spec.vocab.end_local]
    assert row.labels[-len(codes) - 1] == codes[0] and ids[-len(codes) - 1] == tok.convert_tokens_to_ids("<item>")
    assert row.targets == ()  # the next-item loss is for history rows unless asked for
    asked = RowMaker(maker.builder, maker.codes, {}, spec.vocab.end_local, query_targets=True).query("red kettle", target)
    assert asked.targets == ((len(ids) - len(codes) - 1, target),)  # the <item> marker that predicts the first code


def test_item_views_cover_title_sentences_and_spans():
    views = text_views("Kettle", "A red kettle for the stove. It boils water fast and quietly. Two litres.", np.random.default_rng(0), spans=2)
    assert views[:3] == ["Kettle", "A red kettle for the stove.", "It boils water fast and quietly."]
    assert "Kettle. A red kettle for the stove." in views
    assert len(views) == 6 and len(set(views)) == len(views)  # two random spans, no duplicates


def test_codebook_init_keeps_the_codewords_geometry(indexed):
    """SID-token rows are the codewords' PCA projection: distances between codewords survive."""
    _, _, art, _ = indexed
    model = new_tiny_model(TINY, 400, 0, seed=0)
    codebook_init(model, art, base=100)
    books = np.concatenate(load_quantizer(art.path).codebook_vectors())
    rows = model.get_input_embeddings().weight[100 : 100 + len(books)].detach().numpy()
    assert np.allclose(rows, model.lm_head.weight[100 : 100 + len(books)].detach().numpy())
    assert abs(rows.std() - 0.02) < 1e-3
    ratio = np.linalg.norm(rows[0] - rows[1:], axis=1) / np.linalg.norm(books[0] - books[1:], axis=1)
    assert np.allclose(ratio, ratio[0], rtol=1e-3)  # 16-d codewords fit in 64 dimensions: all distances scale alike


def test_training_items_outside_the_index_are_refused(indexed, tmp_path):
    d, store, art, data = indexed
    bad = TrainingData(data.catalog, data.sequences + [("nope-1", "nope-2")], data.queries, data.valid, data.test)
    with pytest.raises(DataError, match=r"2 item\(s\) of the training data are not in index .*'nope-1'"):
        train_decoder(store, d / "data", TrainConfig(**FAST), data=bad, progress=False, checkpoints=tmp_path / "ck")


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_and_a_changed_one_refuses(indexed, tmp_path):
    d, store, _, data = indexed
    cfg = TrainConfig(epochs=3, patience=0, **FAST)
    ck = tmp_path / "ck"

    def stop_after_epoch_1(msg):
        if msg.startswith("select epoch 1/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_decoder(store, d / "data", cfg, data=data, progress=False, checkpoints=ck, log=stop_after_epoch_1)
    first = json.loads(json.dumps(__import__("torch").load(ck / "last.pt", weights_only=False)["progress"]["curve"]))
    with pytest.raises(DataError, match=r"train\.lr=0\.002.*train\.lr=0\.001.*--restart"):
        train_decoder(store, d / "data", TrainConfig(epochs=3, patience=0, lr=1e-3, **FAST), data=data, progress=False, checkpoints=ck)
    logs: list[str] = []
    version, summary = train_decoder(store, d / "data", cfg, data=data, progress=False, checkpoints=ck, log=logs.append)
    assert any(m.startswith("resuming select after epoch 1") for m in logs)
    assert summary["epochs_run"] == 3 and summary["curve"][0] == first[0]
    assert not ck.exists()  # sealed in the store: the checkpoints are gone
    assert summary["best_epoch"] == 1 + int(np.argmax([p["val_recall@10"] for p in summary["curve"]]))


def test_base_model_checkpoint_is_extended_and_served(indexed, tmp_path):
    d, store, art, data = indexed
    # A stand-in for Qwen3-1.7B: a local transformers checkpoint with its own tokenizer.
    tok = train_text_tokenizer(load_items(d / "data" / "items.jsonl").texts, 500)
    model = new_tiny_model(TINY, len(tok), tok.pad_token_id, seed=0)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    cfg = TrainConfig(max_steps=3, val_cases=0, views=True, batch_tokens=1024)
    version, summary = train_decoder(store, d / "data", cfg, base_model=tmp_path / "base", data=data, progress=False, checkpoints=tmp_path / "ck")
    decoder = load_decoder(store, version)
    vocab = decoder.spec.vocab
    assert summary["steps"] == 3 and summary["view_rows"] >= len(art.item_ids)
    assert decoder.spec.model == str(tmp_path / "base")
    assert decoder.spec.prompt.soft_vectors == 0 and decoder.spec.prompt.query_tokens == 64  # own vectors: queries enter as tokens
    assert vocab.base == len(tok) + 4  # text vocabulary, then 4 prompt markers, then SID tokens
    assert decoder.model.get_input_embeddings().num_embeddings >= vocab.end_token + 1
    mask = TrieMask(Trie.from_artifact(art), vocab)
    (hits,), _ = TorchEngine(decoder, mask).decode([decoder.prompt_ids("kettle", [])], beam_width=4, num_sids=4)
    assert len(hits) == 4 and all(h.node >= 0 for h in hits)


def test_first_best_breaks_ties_by_the_next_score_then_the_order():
    """The item weight's rule: Recall@10 first, MRR@10 breaks its ties, then the candidates' order
    (scifact's ~60 validation claims tie the weights' Recall@10 more often than not)."""
    scores = {0.25: (0.85, 0.66), 0.5: (0.85, 0.67), 1.0: (0.85, 0.67), 2.0: (0.84, 0.80)}
    assert first_best([0.25, 0.5, 1.0, 2.0], scores) == 0.5
    assert first_best([1.0, 0.5], scores) == 1.0
    assert first_best([0.25, 2.0], scores) == 0.25  # a higher MRR does not outweigh a lower recall
    assert first_best([0.0, 1.0], {0.0: (0.5,), 1.0: (0.5,)}) == 0.0


def test_a_minilm_prompted_decoder_serves_what_it_validated(tmp_path):
    """Text items embedded by MiniLM: soft query vectors and history content. The stored decoder,
    loaded back, scores the validation cases exactly as the run did while selecting it."""
    synth = generate(SyntheticConfig(num_items=120, seed=5))
    paths = write(synth, tmp_path / "data", num_users=80, seed=5)
    cat = load_items(paths["items"])
    cat = cat.with_popularity(count_popularity(cat, paths["sequences"]))
    store = Store(tmp_path / "store")
    version, _ = build_index(cat, BuildConfig(method="rq-kmeans", quantizer=QuantizerConfig(sizes=(4, 8, 8))), store,
                             cache_dir=tmp_path / "cache", progress=False)
    data = load_training_data(tmp_path / "data")
    data = TrainingData(cat, data.sequences, data.queries, data.valid, data.test)
    cfg = TrainConfig(epochs=2, batch_tokens=1024, tiny=TINY, text_vocab=300, val_cases=40, item_priors=(0.0, 1.0))
    dv, summary = train_decoder(store, tmp_path / "data", cfg, data=data, progress=False, cache_dir=tmp_path / "cache")
    decoder = load_decoder(store, dv)
    assert decoder.spec.embedder == "all-MiniLM-L6-v2" and decoder.spec.prompt.soft_vectors == PromptConfig().soft_vectors == 8
    assert decoder.items.vectors.shape == (120, 384) and not decoder.inputs.empty
    trie = Trie.from_artifact(load_index(store, version))
    rng = np.random.default_rng(0)
    cases = [data.valid[i] for i in np.sort(rng.permutation(len(data.valid))[:40])]
    # the epochs were scored with plain sums; the stored decoder scores with the penalty its validation chose
    by_penalty = summary["val_recall@10_by_length_penalty"]
    assert set(by_penalty) == {"0", "1"} and by_penalty["0"] == summary["val_recall@10"]
    assert decoder.spec.length_penalty == summary["length_penalty"] and by_penalty[f"{decoder.spec.length_penalty:g}"] == max(by_penalty.values())
    for lp, score in by_penalty.items():
        assert Validation(cases).recall(decoder, trie, float(lp), item_weight=0) == pytest.approx(score, abs=1 / 40 + 1e-9)
    # then the item head's weight, at the chosen penalty: 0 is that penalty's score, the best is stored and served
    by_weight = summary["val_recall@10_by_item_weight"]
    assert set(by_weight) == {f"{w:g}" for w in TrainConfig().item_weights} and by_weight["0"] == by_penalty[f"{decoder.spec.length_penalty:g}"]
    mrr = summary["val_mrr@10_by_item_weight"]
    assert set(mrr) == set(by_weight) and all(0 <= mrr[w] <= by_weight[w] for w in mrr)
    # recall first, MRR breaks its ties
    assert decoder.spec.item_weight == summary["item_weight"]
    chosen = f"{decoder.spec.item_weight:g}"
    assert (by_weight[chosen], mrr[chosen]) == max(zip(by_weight.values(), mrr.values()))
    shared = Validation(cases).measure_weights(decoder, trie, None, [float(w) for w in by_weight])
    for w, score in by_weight.items():
        recall, reciprocal = Validation(cases).measure(decoder, trie, item_weight=float(w))
        assert recall == pytest.approx(score, abs=1 / 40 + 1e-9) and reciprocal <= recall
        assert shared[float(w)] == (recall, reciprocal)  # one decode for the positive weights, the same figures
    assert Validation(cases).recall(decoder, trie) == pytest.approx(by_weight[f"{decoder.spec.item_weight:g}"], abs=1 / 40 + 1e-9)
    # the weights were scored under each item prior; the best pair is stored, its prior with it
    by_prior = summary["val_recall@10_by_item_prior"]
    assert set(by_prior) == {"0", "1"} and decoder.spec.item_prior == summary["item_prior"] in (0.0, 1.0)
    assert by_prior[f"{decoder.spec.item_prior:g}"] == max(by_prior.values()) == by_weight[chosen]
    other = 1.0 - decoder.spec.item_prior
    assert max(r for r, _ in Validation(cases).measure_weights(decoder, trie, None, TrainConfig().item_weights, other).values()) \
        == pytest.approx(by_prior[f"{other:g}"], abs=1 / 40 + 1e-9)
    (hits,), _ = TorchEngine(decoder, TrieMask(trie, decoder.spec.vocab)).decode([decoder.prompt_ids("kettle", [])], 4, 4)
    assert len(hits) == 4

    # the dense teacher scores the query rows of a batch, and only them; by default it is off for
    # RQ-Kmeans codes (centroids of the MiniLM vectors themselves)
    art = load_index(store, version)
    assert _Run(art, data, cfg, None, False, print, tmp_path / "cache").dense is None
    run = _Run(art, data, dataclasses.replace(cfg, dense_teacher=1.0), None, False, print, tmp_path / "cache")
    model, inputs = run.new_model(refit=False)
    batch = next(b for b in run.batches(np.random.default_rng(0), refit=False) if (b.queries >= 0).any())
    qv = run.query_vectors[batch.queries.clamp(min=0)]
    hidden = model.model(inputs_embeds=embed_inputs(model, inputs, batch.ids, run.soft_id, qv, batch.content, run.item_vectors),
                         attention_mask=batch.attention).last_hidden_state
    term = run.dense_loss(model, hidden, batch.labels, batch.queries, qv)
    assert 0 < term.item() < float("inf")
    # deeper levels add their terms to the first code's
    run.cfg = dataclasses.replace(run.cfg, dense_levels=3)
    assert run.dense_loss(model, hidden, batch.labels, batch.queries, qv).item() > term.item()
    assert run.dense_loss(model, hidden, batch.labels, torch.full_like(batch.queries, -1), qv).item() == 0

    # the next-item head trains on text prompts too by default only where there are no histories
    assert not run.spec.item_head_queries
    claims = [Example(cat.texts[i], (), cat.item_ids[i]) for i in range(50)]  # a text corpus: queries, no histories
    text_only = TrainingData(cat, [], claims[:40], claims[40:], [])
    assert _Run(art, text_only, cfg, None, False, print, tmp_path / "cache").spec.item_head_queries
    assert not _Run(art, text_only, dataclasses.replace(cfg, item_loss_queries=False), None, False, print, tmp_path / "cache").spec.item_head_queries
    assert not _Run(art, text_only, dataclasses.replace(cfg, item_loss=0.0), None, False, print, tmp_path / "cache").spec.item_head_queries


def test_query_rows_train_the_item_head_by_default_only_without_histories():
    from indexer.training.config import item_loss_queries_on

    assert TrainConfig().item_loss_queries is None
    assert [item_loss_queries_on(None, h) for h in (False, True)] == [True, False]
    assert [item_loss_queries_on(s, h) for s in (True, False) for h in (False, True)] == [True, True, False, False]


def test_the_dense_teacher_is_on_by_default_for_codes_of_a_learned_latent_only():
    from indexer.quantizers import ACRQ, RQVAE, ACRQKMeans, RQKMeans
    from indexer.training.config import dense_teacher_weight

    assert [dense_teacher_weight(None, q.in_embedding_space) for q in (ACRQ, RQVAE, ACRQKMeans, RQKMeans)] == [1.0, 1.0, 0.0, 0.0]
    assert dense_teacher_weight(0.0, False) == 0.0 and dense_teacher_weight(2.0, True) == 2.0
    with pytest.raises(DataError, match="dense_teacher must be >= 0"):
        TrainConfig(dense_teacher=-1.0)


def test_the_dense_teacher_sums_item_shares_per_first_code():
    """Each query's targets are a distribution over first codes; a cold teacher puts nearly all of
    it on the nearest item's code, a hot one spreads it by how many items a code holds."""
    from indexer.training.teacher import DenseTeacher

    vectors = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    codes = torch.stack([torch.arange(30) % 3 + 2, torch.full((30,), 1)], 1)  # first codes 2, 3, 4 (10 items each), then <sid_end> = 1
    queries = vectors[[0, 7]]  # items 0 (code 2) and 7 (code 3)
    none = torch.zeros(2, 0, dtype=torch.long)
    cold = DenseTeacher(vectors, codes, num_local=6, temperature=0.01)
    cold = cold.targets(cold.share(queries), none)
    assert cold.shape == (2, 6) and torch.allclose(cold.sum(1), torch.ones(2))
    assert cold[0, 2] > 0.99 and cold[1, 3] > 0.99 and cold[:, [0, 1, 5]].abs().max() == 0
    hot = DenseTeacher(vectors, codes, num_local=6, temperature=1e4)
    hot = hot.targets(hot.share(queries), none)
    assert torch.allclose(hot[:, 2:5], torch.full((2, 3), 1 / 3), atol=1e-3)


def test_the_dense_teacher_targets_deeper_levels_within_the_gold_prefix():
    """Past the first code the target covers only the items under the row's gold prefix, by their
    next code, or <sid_end> where their SID ends."""
    from indexer.training.teacher import DenseTeacher

    vectors = torch.eye(4)
    # item 0: (2, 4), item 1: (2, 5), item 2: (3, 4), item 3: (2) alone; <sid_end> = 1, -1 pads
    codes = torch.tensor([[2, 4, 1], [2, 5, 1], [3, 4, 1], [2, 1, -1]])
    teacher = DenseTeacher(vectors, codes, num_local=6, temperature=1.0)
    share = teacher.share(torch.tensor([[0.0, 0.0, 1.0, 0.0]]))  # nearest item 2, the others level
    second = teacher.targets(share, torch.tensor([[2]]))[0]
    # under prefix 2: items 0, 1 and 3 with equal shares; item 2 (code 3 first) is left out
    assert torch.allclose(second, torch.tensor([0, 1 / 3, 0, 0, 1 / 3, 1 / 3]))
    end = teacher.targets(share, torch.tensor([[2, 4]]))[0]
    assert end.argmax() == 1 and end.sum() == pytest.approx(1)


def test_views_of_a_catalog_item(indexed):
    _, _, art, data = indexed
    item = art.item_ids[0]
    views = item_views(data, [item], spans=0, seed=0)
    i = data.catalog.index_of[item]
    assert views[0] == (data.catalog.texts[i], item) and all(it == item for _, it in views)


def test_a_span_pool_teaches_fresh_spans_each_epoch(indexed):
    """With ``span_pool``, every epoch keeps the fixed views and takes ``view_spans`` of each item's
    pooled spans, picked afresh; the pool is embedded once, beside the fixed views."""
    _, _, art, data = indexed
    long = [" ".join(f"w{(r * 7 + j) % 50}" for j in range(40)) for r in range(len(data.catalog.texts))]  # bodies spans come from
    data = dataclasses.replace(data, catalog=dataclasses.replace(data.catalog, texts=long))
    run = _Run(art, data, TrainConfig(**dict(FAST, views=True), view_spans=1, span_pool=4), None, False, lambda m: None, None)
    fixed = set(run.fixed_views)
    assert run.span_pool and max(len(spans) for spans in run.span_pool.values()) == 4
    rng = np.random.default_rng(0)
    first, second = run.epoch_views(rng), run.epoch_views(rng)
    for views in (first, second):
        assert fixed <= set(views)
        spans = [v for v in views if v not in fixed]
        assert len(spans) == len(run.span_pool) and all(t in run.span_pool[i] for t, i in spans)
    assert set(first) != set(second)
    for fixed_spans in (TrainConfig(**dict(FAST, views=True), view_spans=1, span_pool=0), TrainConfig(**dict(FAST, views=True), view_spans=4, span_pool=4)):
        plain = _Run(art, data, fixed_spans, None, False, lambda m: None, None)
        assert plain.epoch_views(rng) is plain.views and not plain.span_pool  # a pool no larger: the same spans every epoch
    assert [TrainConfig(view_spans=v, span_pool=p).pooled_spans for v, p in ((6, 18), (6, 4), (0, 18), (6, 0))] == [18, 6, 0, 6]


def test_the_next_item_loss_trains_the_history_positions_toward_the_item_table(indexed, tmp_path):
    """item_loss adds a softmax over the catalog at each first-code position; training with it
    leaves a decoder that serves like any other, and a config without item content refuses it."""
    d, store, _, data = indexed
    cfg = TrainConfig(epochs=2, patience=0, item_loss=1.0, item_negatives=0, **FAST)
    version, summary = train_decoder(store, d / "data", cfg, data=data, progress=False, checkpoints=tmp_path / "ck")
    plain = TrainConfig(epochs=2, patience=0, item_loss=0.0, **FAST)
    _, base = train_decoder(store, d / "data", plain, data=data, progress=False, checkpoints=tmp_path / "ck2")
    # the auxiliary term (~log of 300 items at the start) is part of the reported loss
    assert summary["curve"][0]["loss"] > base["curve"][0]["loss"] + 2.0
    assert summary["curve"][1]["loss"] < summary["curve"][0]["loss"]
    _, sampled = train_decoder(store, d / "data", TrainConfig(epochs=2, patience=0, item_loss=1.0, item_negatives=32, **FAST),
                               data=data, progress=False, checkpoints=tmp_path / "ck3")
    # a softmax over ~32 drawn items plus the batch's targets starts lower than one over all 300
    assert base["curve"][0]["loss"] + 1.0 < sampled["curve"][0]["loss"] < summary["curve"][0]["loss"]
    # view rows (title -> item) get the term only when asked: their batches then add ~log(33)
    views = dict(FAST, views=True, epochs=1, patience=0, item_loss=1.0, item_negatives=32)
    hist_version, hist_only = train_decoder(store, d / "data", TrainConfig(**views), data=data, progress=False, checkpoints=tmp_path / "ck4")
    views_version, with_views = train_decoder(store, d / "data", TrainConfig(**views, item_loss_queries=True), data=data, progress=False,
                                              checkpoints=tmp_path / "ck5")
    assert with_views["view_rows"] == hist_only["view_rows"] > 0
    assert with_views["curve"][0]["loss"] > hist_only["curve"][0]["loss"] + 0.5
    # only the head that saw text prompts re-ranks text requests (Retriever.fuses)
    assert load_decoder(store, views_version).spec.item_head_queries and not load_decoder(store, hist_version).spec.item_head_queries
    # and such a head is served: its weight is chosen among the positive candidates, whatever 0 scored
    assert set(with_views["val_recall@10_by_item_weight"]) == {f"{w:g}" for w in TrainConfig().item_weights}
    positive = {w: v for w, v in with_views["val_recall@10_by_item_weight"].items() if w != "0"}
    assert with_views["item_weight"] > 0 and positive[f"{with_views['item_weight']:g}"] == max(positive.values())
    with pytest.raises(DataError, match="item_loss needs item content"):
        TrainConfig(prompt=PromptConfig(item_content="none"))
    with pytest.raises(DataError, match="item_loss must be >= 0"):
        TrainConfig(item_loss=-1.0)


def test_a_layer_softmax_decoder_trains_stores_its_choice_and_serves_it(indexed, tmp_path):
    """``sid_softmax="layer"`` scores each SID position over its own layer's ids: the loss starts
    lower than over the whole range (log 4..17 ids against log 29), the choice is stored with the
    decoder, and the loaded decoder's engine decodes valid SIDs with it. Terms that read full-range
    logits refuse it."""
    d, store, art, data = indexed
    runs = {}
    for softmax in ("full", "layer"):
        cfg = TrainConfig(epochs=1, patience=0, item_loss=0.0, sid_softmax=softmax, **FAST)
        version, summary = train_decoder(store, d / "data", cfg, data=data, progress=False, checkpoints=tmp_path / softmax)
        runs[softmax] = (version, summary["curve"][0]["loss"])
    assert runs["layer"][1] < runs["full"][1] - 0.3
    decoder = load_decoder(store, runs["layer"][0])
    assert decoder.spec.sid_softmax == "layer" and load_decoder(store, runs["full"][0]).spec.sid_softmax == "full"
    trie = Trie.from_artifact(art)
    mask = TrieMask(trie, decoder.spec.vocab)
    (hits,), _ = TorchEngine(decoder, mask).decode([decoder.prompt_ids(None, [(data.sequences[0][-1], None)])], beam_width=8, num_sids=5)
    valid = {trie.sid_of(int(n)) for n in trie.terminal_nodes()}
    assert len(hits) == 5 and all(h.sid in valid for h in hits)
    with pytest.raises(DataError, match="sid_softmax full"):
        TrainConfig(sid_softmax="layer", sid_later=1.0)
    with pytest.raises(DataError, match="sid_softmax must be"):
        TrainConfig(sid_softmax="level")
    with pytest.raises(DataError, match="sid_softmax must be one of full, layer"):
        dataclasses.replace(decoder.spec, sid_softmax="level")


def test_collab_item_content_projects_the_items_collaborative_vectors_and_is_served(indexed, tmp_path):
    """``minilm+collab+id`` appends each item's collaborative vectors (from the run's training
    sequences) to what the content map projects: they are stored with the decoder, the loaded one
    scores validation as the run did, and its item head reads them. Data without histories, or
    a content map without its vectors' width, refuses."""
    d, store, art, data = indexed
    cfg = TrainConfig(epochs=1, patience=0, prompt=PromptConfig(item_content="minilm+collab+id"), **FAST)
    version, summary = train_decoder(store, d / "data", cfg, data=data, progress=False, checkpoints=tmp_path / "ck")
    decoder = load_decoder(store, version)
    expected, _ = collaborative_vectors(decoder.items.ids, data.sequences, COLLAB_DIM, cfg.seed)
    stored = decoder.items.collab
    assert stored.shape == (300, 3 * COLLAB_DIM) and decoder.items.collab_dim == 3 * COLLAB_DIM and np.abs(expected).sum() > 0
    # each view's block: unit rows where the item has pairs, zeros where not (stored as float16;
    # the factors themselves can rotate between two ARPACK calls on this small catalog's tied values,
    # so the served decoder must read the stored ones: it scores validation as the run did, below)
    for view in range(3):
        block = slice(view * COLLAB_DIM, (view + 1) * COLLAB_DIM)
        norms, has = np.linalg.norm(stored[:, block], axis=1), np.abs(expected[:, block]).sum(1) > 0
        np.testing.assert_allclose(norms[has], 1, atol=1e-2)
        assert not norms[~has].any()
    assert decoder.inputs.content.in_features == 16 + 3 * COLLAB_DIM and decoder.items.vectors.shape == (300, 16)
    trie = Trie.from_artifact(art)
    chosen = summary["val_recall@10_by_item_weight"][f"{decoder.spec.item_weight:g}"]
    cases = sample_cases(data.valid, cfg.val_cases, cfg.seed)
    assert Validation(cases).recall(decoder, trie) == pytest.approx(chosen, abs=1e-4)  # the summary keeps 4 digits
    # the head scores items by their collaborative vectors too: without them its outputs move
    before = decoder.item_outputs()
    decoder.items.collab = np.zeros_like(decoder.items.collab)
    decoder.__post_init__()
    assert not torch.allclose(before, decoder.item_outputs())
    with pytest.raises(DataError, match="needs training histories"):
        _Run(art, TrainingData(data.catalog, [], data.queries, data.valid, data.test), cfg, None, False, print, None)
    with pytest.raises(ValueError, match="collab content needs"):
        PromptInputs(hidden=64, embed_dim=16, soft_vectors=0, item_content="minilm+collab+id", num_items=3)
    with pytest.raises(ValueError, match="collab content needs"):
        PromptInputs(hidden=64, embed_dim=16, soft_vectors=0, item_content="minilm+id", num_items=3, collab_dim=8)


def test_later_pairs_join_each_target_position_to_the_later_targets_of_its_row():
    import torch

    targets = torch.tensor([[5, -1, 7, -1, 9], [-1, 3, -1, 4, -1], [-1, -1, 2, -1, -1]])
    a, b = later_pairs(targets >= 0)
    # positions numbered row-major: 0 1 2 in row 0, 3 4 in row 1, 5 alone in row 2
    assert list(zip(a.tolist(), b.tolist())) == [(0, 1), (0, 2), (1, 2), (3, 4)]
    assert later_pairs(torch.zeros(2, 3, dtype=torch.bool))[0].numel() == 0


def test_the_later_items_terms_add_to_the_losses_and_refuse_bad_settings(indexed, tmp_path):
    d, store, _, data = indexed
    fast = {k: v for k, v in FAST.items() if k != "val_cases"}
    runs = {name: train_decoder(store, d / "data", TrainConfig(epochs=1, patience=0, item_loss=1.0, item_negatives=0, val_cases=0, **extra, **fast),
                                data=data, progress=False, checkpoints=tmp_path / name)[1]["curve"][0]["loss"]
            for name, extra in {"plain": {}, "items": {"item_later": 1.0}, "codes": {"sid_later": 1.0},
                                "teacher": {"rules_teacher": 1.0}, "levels": {"rules_teacher": 1.0, "rules_levels": 3},
                                "layer": {"sid_softmax": "layer"}, "layer levels": {"sid_softmax": "layer", "rules_teacher": 1.0, "rules_levels": 3}}.items()}
    # every later item is another ~log(300 items) nats at the start, every later first code (or
    # the teacher's spread over first codes) ~log(28 codes)
    assert runs["items"] > runs["plain"] + 2.0
    assert runs["codes"] > runs["plain"] + 1.0
    assert runs["teacher"] > runs["plain"] + 1.0
    assert runs["levels"] > runs["teacher"] + 0.5  # the deeper positions' spreads under the gold prefix add on
    assert runs["layer levels"] > runs["layer"] + 1.0  # each level's target over that layer's ids alone
    with pytest.raises(DataError, match="needs --item-loss"):
        TrainConfig(item_loss=0.0, item_later=1.0)
    with pytest.raises(DataError, match="item_later must be >= 0"):
        TrainConfig(item_later=-0.5)
    with pytest.raises(DataError, match="sid_later must be >= 0"):
        TrainConfig(sid_later=float("inf"))
    with pytest.raises(DataError, match="rules_teacher must be >= 0"):
        TrainConfig(rules_teacher=-1.0)
    with pytest.raises(DataError, match="rules_levels must be >= 1"):
        TrainConfig(rules_levels=0)


def test_the_item_level_rules_teacher_adds_a_soft_loss_over_the_drawn_items_and_its_best_ones(indexed, tmp_path):
    d, store, _, data = indexed
    fast = {k: v for k, v in FAST.items() if k != "val_cases"}
    # 16 drawn items: the teacher's best items join the softmax, which then still spreads over them
    runs = {(w, end, tail): train_decoder(store, d / "data", TrainConfig(epochs=1, patience=0, item_loss=1.0, item_negatives=16, val_cases=0,
                                                                         rules_teacher_items=w, rules_items_end=end, rules_items_tail=tail, **fast),
                                          data=data, progress=False, checkpoints=tmp_path / f"w{w}-{end}-{tail}")[1]["curve"][0]["loss"]
            for w, end, tail in ((0.0, 1.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, 2.0, 1.0), (1.0, 1.0, 0.0))}
    assert runs[1.0, 1.0, 1.0] > runs[0.0, 1.0, 1.0] + 1.0
    # decayed to 0 over the epoch, the term weighs about half as much on the epoch's mean
    assert runs[0.0, 1.0, 1.0] + 0.25 < runs[1.0, 0.0, 1.0] < runs[1.0, 1.0, 1.0] - 0.25
    # rising to twice its first weight, the term weighs more than the constant one
    assert runs[1.0, 2.0, 1.0] > runs[1.0, 1.0, 1.0] + 0.25
    assert TrainConfig(rules_teacher_items=2.0, rules_items_end=3.0).rules_items_weight_at(0.5) == 4.0
    # none at the tail targets (about a fifth of this catalog's positions): most of the term stays
    assert runs[0.0, 1.0, 1.0] + 1.0 < runs[1.0, 1.0, 0.0] < runs[1.0, 1.0, 1.0] - 0.25
    # on by default beside the next-item loss, off without it
    assert (TrainConfig().rules_items_weight, TrainConfig(item_loss=0.0).rules_items_weight) == (4.0, 0.0)
    with pytest.raises(DataError, match="needs --item-loss"):
        TrainConfig(item_loss=0.0, rules_teacher_items=1.0)
    with pytest.raises(DataError, match="rules_teacher_items must be >= 0"):
        TrainConfig(rules_teacher_items=-1.0)
    with pytest.raises(DataError, match="rules_items_end must be >= 0"):
        TrainConfig(rules_items_end=-0.5)
    with pytest.raises(DataError, match=r"rules_items_tail must be in \[0, 1\]"):
        TrainConfig(rules_items_tail=-0.5)


def test_reverse_rows_add_newest_first_copies_of_the_histories(indexed, tmp_path):
    d, store, _, data = indexed
    fast = {k: v for k, v in FAST.items() if k != "val_cases"}
    steps = {share: train_decoder(store, d / "data", TrainConfig(epochs=1, patience=0, val_cases=0, reverse_rows=share, **fast),
                                  data=data, progress=False, checkpoints=tmp_path / str(share))[1]["steps"]
             for share in (0.0, 1.0)}
    assert 1.6 < steps[1.0] / steps[0.0] < 2.4  # every history twice: as taken, and newest first
    with pytest.raises(DataError, match="reverse_rows must be in"):
        TrainConfig(reverse_rows=1.5)


def test_validation_items_continue_their_users_sequences():
    sequences = [("a", "b"), ("a", "b"), ("c", "d"), ("e", "f")]
    valid = [Example(None, ("a", "b"), "x"), Example(None, ("a", "b"), "y"), Example(None, ("c", "d"), "z"), Example(None, ("g",), "h")]
    # two users with the same training part each get their own validation item, no row is
    # repeated, and a history too short to train on becomes a sequence with its validation item
    assert sorted(extend_sequences(sequences, valid)) == [("a", "b", "x"), ("a", "b", "y"), ("c", "d", "z"), ("e", "f"), ("g", "h")]


def test_train_valid_learns_every_validation_item_but_the_scored_ones(indexed):
    _, _, art, data = indexed
    fast = {**FAST, "val_cases": 30}
    plain = _Run(art, data, TrainConfig(**fast, train_valid=False), None, False, print, None)
    run = _Run(art, data, TrainConfig(**fast), None, False, print, None)  # on by default
    assert run.dense is None  # histories alone: the dense teacher has no query to teach from
    scored = set(run.validation.cases)
    assert len(scored) == 30 and scored == set(plain.validation.cases)  # the same users validate either way
    assert plain.examples(refit=False)[0] == list(data.sequences)
    sequences, _ = run.examples(refit=False)
    trained, before = Counter(sequences), Counter(data.sequences)
    unscored = [e for e in data.valid if e not in scored]
    assert len(unscored) == len(data.valid) - 30
    # (a continued sequence that is itself another user's training part would blur the counts)
    clear = [e for e in data.valid if not before[e.history + (e.target,)]]
    assert len(clear) > 0.8 * len(data.valid)
    assert all(bool(trained[e.history + (e.target,)]) == (e not in scored) for e in clear)
    assert len(data.sequences) <= len(sequences) <= len(data.sequences) + len(unscored)  # continued, not repeated
    everything, _ = run.examples(refit=True)  # a refit adds them all
    assert {e.history + (e.target,) for e in data.valid} <= set(everything)


def test_train_options_reach_the_config():
    """Every command's training flags end up in its TrainConfig; a bad value exits 2 naming the flag."""
    seen = {}

    @click.command()
    @train_options()
    def cmd(train_opts):
        seen["cfg"] = train_config(train_opts, seed=3)

    ok = CliRunner().invoke(cmd, ["--weight-decay", "0.1", "--history-items", "5", "--patience", "0", "--rules-teacher", "0.5", "--rules-teacher-items", "0.5", "--rules-teacher-items-end", "0.25", "--rules-teacher-items-tail", "0.5",
                                  "--rules-levels", "3", "--dense-levels", "2", "--query-noise", "0.5", "--view-spans", "4", "--span-pool", "12", "--query-repeats", "2", "--dropout", "0.2", "--attention-dropout", "0.25", "--label-smoothing", "0.1", "--item-init", "collab",
                                  "--hidden-size", "256", "--layers", "4", "--heads", "8", "--intermediate-size", "768"])
    assert ok.exit_code == 0, ok.output
    cfg = seen["cfg"]
    assert (cfg.tiny.hidden_size, cfg.tiny.layers, cfg.tiny.heads, cfg.tiny.intermediate_size) == (256, 4, 8, 768)
    assert (cfg.weight_decay, cfg.prompt.history_items, cfg.patience, cfg.seed, cfg.rules_teacher) == (0.1, 5, 0, 3, 0.5)
    assert (cfg.rules_teacher_items, cfg.rules_items_weight, cfg.rules_levels, cfg.rules_items_end, cfg.rules_items_tail) == (0.5, 0.5, 3, 0.25, 0.5)
    assert (cfg.dropout, cfg.tiny.attention_dropout, cfg.label_smoothing, cfg.item_init) == (0.2, 0.25, 0.1, "collab")
    assert cfg.lr == TrainConfig().lr and cfg.dense_levels == 2 and cfg.query_noise == 0.5 and cfg.view_spans == 4
    assert (cfg.span_pool, cfg.query_repeats, cfg.sid_softmax, cfg.item_loss_queries) == (12, 2, "full", None)
    for flag, value in (("--item-loss-queries", True), ("--no-item-loss-queries", False)):
        ok = CliRunner().invoke(cmd, [flag])
        assert ok.exit_code == 0 and seen["cfg"].item_loss_queries is value, ok.output
    ok = CliRunner().invoke(cmd, ["--sid-softmax", "layer"])
    assert ok.exit_code == 0 and seen["cfg"].sid_softmax == "layer", ok.output
    assert TrainConfig().length_penalties == (0.0, 1.0)
    ok = CliRunner().invoke(cmd, ["--length-penalties", "0,0.5,2"])
    assert ok.exit_code == 0, ok.output
    assert seen["cfg"].length_penalties == (0.0, 0.5, 2.0)
    for value in ("-1", "0,x", ""):
        bad = CliRunner().invoke(cmd, ["--length-penalties", value])
        assert bad.exit_code == 2 and "--length-penalties" in bad.output
    with pytest.raises(DataError, match="length_penalties"):
        TrainConfig(length_penalties=())
    assert TrainConfig().item_weights == (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    for option, field, given, bad_config in (("--item-weights", "item_weights", (0.0, 2.0), (0.0, -1.0)),
                                             ("--item-priors", "item_priors", (0.0, 0.5), ())):
        ok = CliRunner().invoke(cmd, [option, ",".join(f"{v:g}" for v in given)])
        assert ok.exit_code == 0 and getattr(seen["cfg"], field) == given, ok.output
        for value in ("-1", "0,x", "inf"):
            bad = CliRunner().invoke(cmd, [option, value])
            assert bad.exit_code == 2 and option in bad.output
        with pytest.raises(DataError, match=field):
            TrainConfig(**{field: bad_config})
    bad = CliRunner().invoke(cmd, ["--query-noise", "-1"])
    assert bad.exit_code == 2 and "--query-noise" in bad.output
    bad = CliRunner().invoke(cmd, ["--view-spans", "-1"])
    assert bad.exit_code == 2 and "--view-spans" in bad.output
    bad = CliRunner().invoke(cmd, ["--query-repeats", "0"])
    assert bad.exit_code == 2 and "--query-repeats" in bad.output
    bad = CliRunner().invoke(cmd, ["--dense-levels", "0"])
    assert bad.exit_code == 2 and "--dense-levels" in bad.output
    bad = CliRunner().invoke(cmd, ["--weight-decay", "-1"])
    assert bad.exit_code == 2 and "--weight-decay" in bad.output
    bad = CliRunner().invoke(cmd, ["--dropout", "1"])
    assert bad.exit_code == 2 and "--dropout" in bad.output
    bad = CliRunner().invoke(cmd, ["--label-smoothing", "1"])
    assert bad.exit_code == 2 and "--label-smoothing" in bad.output
    bad = CliRunner().invoke(cmd, ["--sid-softmax", "level"])
    assert bad.exit_code == 2 and "--sid-softmax" in bad.output
    bad = CliRunner().invoke(cmd, ["--item-init", "text"])
    assert bad.exit_code == 2 and "--item-init" in bad.output
    with pytest.raises(DataError, match="item_init collab"):
        TrainConfig(item_init="collab", prompt=PromptConfig(item_content="minilm"))
    with pytest.raises(DataError, match=r"heads \(3\) must be a multiple of kv_heads \(2\)"):
        CliRunner().invoke(cmd, ["--heads", "3"], catch_exceptions=False)


def test_collab_init_starts_co_occurring_items_close():
    """Items bought together start with near embeddings, unrelated ones apart; an item in no
    training sequence keeps its random row."""
    torch = pytest.importorskip("torch")
    from sidcore.decoder.model import PromptInputs

    items = [f"i{k}" for k in range(80)]
    rng = np.random.default_rng(0)
    # two communities: items 0-39 co-occur among themselves, 40-78 among themselves; 79 never appears
    sequences = [tuple(items[j] for j in rng.choice(np.arange(lo, hi), 5, replace=False)) for lo, hi in ((0, 40), (40, 79)) for _ in range(300)]
    inputs = PromptInputs(hidden=96, embed_dim=8, soft_vectors=0, item_content="id", num_items=len(items))
    before = inputs.item.weight[79].detach().clone()
    assert collab_init(inputs, items, sequences, seed=0) == 79
    w = torch.nn.functional.normalize(inputs.item.weight.detach(), dim=1)
    same, other = (w[:40] @ w[:40].T).mean().item(), (w[:40] @ w[40:79].T).mean().item()
    assert same > 0.15 and abs(other) < 0.05, (same, other)
    assert torch.equal(inputs.item.weight[79], before)
    assert abs(inputs.item.weight[:79, :64].std().item() - 0.02) < 0.005 and inputs.item.weight[:79, 64:].abs().max() == 0


def test_query_noise_moves_query_rows_only_and_keeps_them_unit():
    from indexer.training.trainer import perturb_queries

    torch.manual_seed(0)
    qv = torch.nn.functional.normalize(torch.randn(3, 384), dim=1)
    qv[2] = 0.0  # a row without a query
    queries = torch.tensor([4, 9, -1])
    assert perturb_queries(qv, queries, 0.0) is qv
    out = perturb_queries(qv, queries, 0.5)
    assert torch.allclose(out[:2].norm(dim=1), torch.ones(2)) and torch.equal(out[2], qv[2])
    # noise of norm 0.5, nearly orthogonal in 384 dimensions: cosine ~ 1 / sqrt(1 + 0.25) = 0.89
    assert (out[:2] * qv[:2]).sum(1).tolist() == pytest.approx([0.894, 0.894], abs=0.03)
    with pytest.raises(DataError, match="query_noise must be >= 0"):
        TrainConfig(query_noise=-0.1)
