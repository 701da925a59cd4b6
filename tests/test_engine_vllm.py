"""vLLM engine against the torch engine on one tiny trained decoder: same top SIDs, same scores.

One engine serves the whole module (starting vLLM costs ~40 s on 2 cores); the torch engine is
the reference, itself pinned to exhaustive scoring in test_engine_torch.py.
"""

import asyncio

import numpy as np
import pytest

pytest.importorskip("vllm")

from indexer.build import BuildConfig, build_index, load_index  # noqa: E402
from indexer.data.catalog import count_popularity, load_items  # noqa: E402
from indexer.data.synthetic import SyntheticConfig, generate, write  # noqa: E402
from indexer.quantizers import QuantizerConfig  # noqa: E402
from indexer.training.trainer import TrainConfig, train_decoder  # noqa: E402
from model_store import Store  # noqa: E402
from service.decoder.bundle import load_decoder  # noqa: E402
from service.decoder.model import TinyConfig  # noqa: E402
from service.engines.torch_engine import TorchEngine  # noqa: E402
from service.engines.vllm_engine import VLLMEngine  # noqa: E402
from service.index import SIDVocab, Trie, TrieMask  # noqa: E402

TINY = TinyConfig(hidden_size=64, layers=2, heads=2, kv_heads=1, head_dim=32, intermediate_size=128)
MAX_BEAM = 48


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("vllm_engine")
    synth = generate(SyntheticConfig(num_items=400, dim=16, seed=2))
    paths = write(synth, d / "data", num_users=150, seed=2)
    cat = load_items(paths["items"]).with_vectors(synth.catalog.vectors)
    cat = cat.with_popularity(count_popularity(cat, paths["sequences"]))
    store = Store(d / "store")
    # Small codebooks with SARQ: variable-length SIDs, and a trie a beam can cover whole.
    cfg = BuildConfig(method="sarq", quantizer=QuantizerConfig(sizes=(4, 4, 6), epochs=3, latent_dim=8, hidden=(32,)))
    build_index(cat, cfg, store, progress=False)
    train_decoder(store, d / "data", TrainConfig(steps=30, batch_size=16, tiny=TINY, text_vocab=300), progress=False)
    decoder = load_decoder(store)
    art = load_index(store, decoder.spec.index_version)
    trie = Trie.from_artifact(art)
    mask = TrieMask(trie, SIDVocab(art.sizes, decoder.spec.base))
    return decoder, trie, mask, art


@pytest.fixture(scope="module")
def engines(trained):
    decoder, trie, mask, _ = trained
    current = {"mask": mask}
    with VLLMEngine(decoder, lambda: current["mask"], max_beam_width=MAX_BEAM) as vllm_engine:
        yield vllm_engine, TorchEngine(decoder, mask), current
    with pytest.raises(RuntimeError, match="closed"):
        vllm_engine.decode([[decoder.spec.base]], beam_width=2, num_sids=1)


@pytest.fixture(scope="module")
def prompts(trained):
    decoder, trie, _, art = trained
    history = [(art.item_ids[i], trie.sid_of(trie.node_of_item(art.item_ids[i]))) for i in (3, 8, 1)]
    return [
        decoder.prompt_ids(None, history),
        decoder.prompt_ids("compact kettle", []),
        decoder.prompt_ids("wireless speaker black", history[:1]),
        decoder.prompt_ids("red", []),
    ]


def _valid(trie):
    return {trie.sid_of(int(n)) for n in trie.terminal_nodes()}


def assert_same_hits(got, want):
    for g, w in zip(got, want, strict=True):
        assert [h.sid for h in g] == [h.sid for h in w]
        assert [h.node for h in g] == [h.node for h in w]
        np.testing.assert_allclose([h.score for h in g], [h.score for h in w], atol=1e-4)


@pytest.mark.parametrize("beam_width", [4, 16, 36])
def test_top_sids_equal_the_torch_engine(engines, trained, prompts, beam_width):
    vllm_engine, torch_engine, _ = engines
    _, trie, _, _ = trained
    k = min(beam_width, 10)
    got, stats = vllm_engine.decode(prompts, beam_width=beam_width, num_sids=k)
    want, want_stats = torch_engine.decode(prompts, beam_width=beam_width, num_sids=k)
    assert_same_hits(got, want)
    assert stats == want_stats
    valid = _valid(trie)
    for hits in got:
        assert len(hits) == k
        assert all(h.sid in valid and trie.sid_of(h.node) == h.sid for h in hits)


def test_unconstrained_equals_the_torch_engine_and_flags_misses(engines, trained, prompts):
    vllm_engine, torch_engine, _ = engines
    _, trie, _, _ = trained
    got, _ = vllm_engine.decode(prompts[:2], beam_width=40, num_sids=40, constrained=False)
    want, _ = torch_engine.decode(prompts[:2], beam_width=40, num_sids=40, constrained=False)
    assert_same_hits(got, want)
    valid = _valid(trie)
    assert all((h.node >= 0) == (h.sid in valid) for hits in got for h in hits)
    assert any(h.node < 0 for hits in got for h in hits), "with 40 free beams some SIDs should fall outside the index"


def test_concurrent_async_decodes_from_another_loop(engines, prompts):
    vllm_engine, torch_engine, _ = engines

    async def both():
        return await asyncio.gather(*(vllm_engine.decode_async([p], beam_width=8, num_sids=5) for p in prompts))

    results = asyncio.run(both())
    want, _ = torch_engine.decode(prompts, beam_width=8, num_sids=5)
    assert_same_hits([hits for (hits,), _ in results], want)


def test_a_swapped_trie_takes_effect_on_the_next_decode(engines, trained, prompts):
    """The engine process never holds the trie: a mask swap (new version, cold-start insert) is seen at once."""
    vllm_engine, _, current = engines
    decoder, trie, mask, art = trained
    before, _ = vllm_engine.decode(prompts[:1], beam_width=8, num_sids=3)
    dropped = {h.node for h in before[0]}  # the best SIDs lose their items: they must disappear from the results
    keep = np.array([trie.node_of_item(i) not in dropped for i in art.item_ids])
    smaller = Trie.from_items(np.asarray(art.item_ids)[keep], art.codes[keep], art.lengths[keep], art.sizes)
    current["mask"] = TrieMask(smaller, mask.vocab)
    try:
        after, _ = vllm_engine.decode(prompts[:1], beam_width=8, num_sids=3)
        want, _ = TorchEngine(decoder, current["mask"]).decode(prompts[:1], beam_width=8, num_sids=3)
    finally:
        current["mask"] = mask
    assert not {h.sid for h in before[0]} & {h.sid for h in after[0]}
    assert_same_hits(after, want)


def test_beam_wider_than_configured_is_refused(engines, prompts):
    with pytest.raises(ValueError, match="beam_width"):
        engines[0].decode(prompts[:1], beam_width=MAX_BEAM + 1, num_sids=5)
