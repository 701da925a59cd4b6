"""Decoder training: targets are the item's SID tokens + <sid_end>; a local base checkpoint loads and grows."""

import pytest

from indexer.build import BuildConfig, build_index
from indexer.data.catalog import count_popularity, load_items
from indexer.data.synthetic import SyntheticConfig, generate, write
from indexer.quantizers import QuantizerConfig
from indexer.training.examples import Example, load_training_data
from indexer.training.trainer import ExampleEncoder, TrainConfig, train_decoder
from model_store import Store
from sidcore.decoder.bundle import DecoderSpec, load_decoder
from sidcore.decoder.model import TinyConfig, new_tiny_model
from sidcore.decoder.prompt import PromptConfig
from sidcore.decoder.tokenizer import extend_with_sid_tokens, train_text_tokenizer
from sidcore.decoder.vocab import SIDVocab
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index import Trie, TrieMask
from sidcore.index.artifact import load_index

TINY = TinyConfig(hidden_size=64, layers=1, heads=2, kv_heads=1, head_dim=32, intermediate_size=128)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    d = tmp_path_factory.mktemp("dec")
    synth = generate(SyntheticConfig(num_items=300, dim=16, seed=4))
    paths = write(synth, d / "data", num_users=120, seed=4)
    cat = load_items(paths["items"]).with_vectors(synth.catalog.vectors)
    cat = cat.with_popularity(count_popularity(cat, paths["sequences"]))
    store = Store(d / "store")
    build_index(cat, BuildConfig(method="rq-kmeans", quantizer=QuantizerConfig(sizes=(4, 8, 16))), store, progress=False)
    return d, store, load_index(store)


def test_leave_one_out_examples(indexed):
    d, _, _ = indexed
    data = load_training_data(d / "data", history_items=3)
    seq = [line for line in (d / "data" / "sequences.jsonl").read_text().splitlines()][0]
    import json

    items = [str(i) for i in json.loads(seq)["item_ids"]]
    assert data.test[0] == Example(None, tuple(items[:-1][-3:]), items[-1])
    assert data.valid[0] == Example(None, tuple(items[:-2][-3:]), items[-2])
    assert data.train[0] == Example(None, (items[0],), items[1])


def test_example_targets_are_sid_tokens_then_end(indexed):
    _, _, art = indexed
    tok = train_text_tokenizer(["red kettle", "blue hose"], 100)
    base = extend_with_sid_tokens(tok, art.sizes)
    spec = DecoderSpec(art.version, art.sizes, base, PromptConfig(history_mode="sid"), "tiny")
    enc = ExampleEncoder(spec, tok, art, titles={})
    item, hist = art.item_ids[5], art.item_ids[7]
    prompt, target = enc.encode(Example("red kettle", (hist,), item))
    vocab = SIDVocab(art.sizes)
    sid = tuple(art.codes[5, : art.lengths[5]])
    assert target == [vocab.local(layer, c) for layer, c in enumerate(sid)] + [vocab.end_local]
    hist_sid = tuple(art.codes[7, : art.lengths[7]])
    markers = tok.convert_tokens_to_ids(["<query>", "<history>", "<item>", "<sid_begin>"])
    assert prompt[0] == markers[0] and prompt[-1] == markers[3]
    assert prompt[-1 - len(hist_sid) - 1 : -1] == [markers[2], *SIDVocab(art.sizes, base).sid_tokens(hist_sid)[:-1]]


def test_base_model_checkpoint_is_extended_and_served(indexed, tmp_path):
    d, store, art = indexed
    # A stand-in for Qwen3-1.7B: a local transformers checkpoint with its own tokenizer.
    tok = train_text_tokenizer(load_items(d / "data" / "items.jsonl").texts, 500)
    model = new_tiny_model(TINY, len(tok), tok.pad_token_id, seed=0)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    version, summary = train_decoder(store, d / "data", TrainConfig(steps=3, batch_size=8), base_model=tmp_path / "base", progress=False)
    decoder = load_decoder(store, version)
    vocab = decoder.spec.vocab
    assert decoder.spec.model == str(tmp_path / "base")
    assert vocab.base == len(tok) + 4  # text vocabulary, then 4 prompt markers, then SID tokens
    assert decoder.model.get_input_embeddings().num_embeddings >= vocab.end_token + 1
    mask = TrieMask(Trie.from_artifact(art), vocab)
    (hits,), _ = TorchEngine(decoder, mask).decode([decoder.prompt_ids("kettle", [])], beam_width=4, num_sids=4)
    assert len(hits) == 4 and all(h.node >= 0 for h in hits)
