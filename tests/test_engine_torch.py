"""Torch engine: exact against exhaustive scoring, valid SIDs only, unconstrained reports misses."""

import numpy as np
from oracles import score_sids

from sidcore.engines.torch_engine import TorchEngine


def _all_sids(trie):
    return [trie.sid_of(int(n)) for n in trie.terminal_nodes()]


def test_beam_covering_the_trie_equals_exhaustive_scoring(tiny_decoder):
    decoder, trie, mask, art = tiny_decoder
    sids = _all_sids(trie)
    assert len({len(s) for s in sids}) > 1, "the fixture should have variable-length SIDs"
    engine = TorchEngine(decoder, mask)
    prompts = [
        decoder.prompt_ids(None, [(art.item_ids[i], trie.sid_of(trie.node_of_item(art.item_ids[i]))) for i in (3, 8, 1)]),
        decoder.prompt_ids("compact kettle", []),
    ]
    k = 10
    results, stats = engine.decode(prompts, beam_width=len(sids), num_sids=k)
    for prompt, hits in zip(prompts, results):
        exact = score_sids(decoder, prompt, sids, mask.vocab)
        order = np.argsort(exact)[::-1][:k]
        assert [h.sid for h in hits] == [sids[i] for i in order]
        np.testing.assert_allclose([h.score for h in hits], [exact[i] for i in order], atol=1e-4)
        assert all(trie.sid_of(h.node) == h.sid for h in hits)
    assert stats.steps >= 2


def test_constrained_results_are_index_sids(tiny_decoder):
    decoder, trie, mask, art = tiny_decoder
    valid = set(_all_sids(trie))
    engine = TorchEngine(decoder, mask)
    prompts = [decoder.prompt_ids(q, []) for q in ("red", "garden hose pro", "wireless speaker black", "toys")]
    results, _ = engine.decode(prompts, beam_width=5, num_sids=5)
    for hits in results:
        assert hits and all(h.sid in valid and h.node >= 0 for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_unconstrained_flags_sids_outside_the_index(tiny_decoder):
    decoder, trie, mask, art = tiny_decoder
    valid = set(_all_sids(trie))
    engine = TorchEngine(decoder, mask)
    results, _ = engine.decode([decoder.prompt_ids("pet bed", [])], beam_width=40, num_sids=40, constrained=False)
    hits = results[0]
    assert len(hits) == 40
    for h in hits:
        assert (h.node >= 0) == (h.sid in valid)
    assert any(h.node < 0 for h in hits), "with 40 free beams some SIDs should fall outside the index"
