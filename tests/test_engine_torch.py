"""Torch engine: exact against exhaustive scoring, valid SIDs only, unconstrained reports misses."""

import dataclasses

import numpy as np
import pytest
import torch
from oracles import score_sids

from sidcore.decoder.model import sid_log_probs
from sidcore.engines.torch_engine import TorchEngine


def _all_sids(trie):
    return [trie.sid_of(int(n)) for n in trie.terminal_nodes()]


@pytest.mark.parametrize("length_penalty,sid_softmax", [(0.0, "full"), (1.0, "full"), (3.0, "full"), (0.0, "layer"), (1.0, "layer")])
def test_beam_covering_the_trie_equals_exhaustive_scoring(tiny_decoder, length_penalty, sid_softmax):
    """Exact at any length penalty, the live-beam bound dividing by the longest length's factor,
    and under either SID softmax the decoder was trained with."""
    decoder, trie, mask, art = tiny_decoder
    decoder = dataclasses.replace(decoder, spec=dataclasses.replace(decoder.spec, sid_softmax=sid_softmax))
    sids = _all_sids(trie)
    assert len({len(s) for s in sids}) > 1, "the fixture should have variable-length SIDs"
    engine = TorchEngine(decoder, mask, length_penalty=length_penalty)
    prompts = [
        decoder.prompt_ids(None, [(art.item_ids[i], trie.sid_of(trie.node_of_item(art.item_ids[i]))) for i in (3, 8, 1)]),
        decoder.prompt_ids("compact kettle", []),
    ]
    k = 10
    results, stats = engine.decode(prompts, beam_width=len(sids), num_sids=k)
    for prompt, hits in zip(prompts, results):
        exact = [v / (len(sid) + 1) ** length_penalty for v, sid in zip(score_sids(decoder, prompt, sids, mask.vocab), sids)]
        order = np.argsort(exact)[::-1][:k]
        assert [h.sid for h in hits] == [sids[i] for i in order]
        np.testing.assert_allclose([h.score for h in hits], [exact[i] for i in order], atol=1e-4)
        assert all(trie.sid_of(h.node) == h.sid for h in hits)
    assert stats.steps >= 2


def test_the_length_penalty_lifts_long_sids(tiny_decoder):
    """Dividing by (length + 1) ** p, p > 0, can only move a longer SID up past a shorter one."""
    decoder, trie, mask, _ = tiny_decoder
    sids = _all_sids(trie)
    prompt = decoder.prompt_ids("compact kettle", [])
    rank = {}
    for p in (0.0, 3.0):
        (hits,), _ = TorchEngine(decoder, mask, length_penalty=p).decode([prompt], beam_width=len(sids), num_sids=len(sids))
        rank[p] = [len(h.sid) for h in hits]
    longest = max(rank[0.0])
    assert np.mean([i for i, n in enumerate(rank[3.0]) if n == longest]) < np.mean([i for i, n in enumerate(rank[0.0]) if n == longest])


def test_an_engine_scores_with_its_decoders_length_penalty_unless_told_otherwise(tiny_decoder):
    """The penalty a decoder's validation chose (``DecoderSpec.length_penalty``) is what an engine
    scores with by default; an explicit one overrides it, 0 included."""
    decoder, trie, mask, _ = tiny_decoder
    n = len(_all_sids(trie))
    prompt = decoder.prompt_ids("compact kettle", [])

    def ranked(dec, **kwargs):
        engine = TorchEngine(dec, mask, **kwargs)
        (hits,), _ = engine.decode([prompt], beam_width=n, num_sids=n)
        return engine.length_penalty, [(h.sid, round(h.score, 5)) for h in hits]

    chose_3 = dataclasses.replace(decoder, spec=dataclasses.replace(decoder.spec, length_penalty=3.0))
    chose_0 = dataclasses.replace(decoder, spec=dataclasses.replace(decoder.spec, length_penalty=0.0))
    assert ranked(chose_3) == ranked(decoder, length_penalty=3.0) and ranked(chose_3)[0] == 3.0
    assert ranked(chose_3, length_penalty=0.0) == ranked(chose_0)
    assert ranked(chose_3)[1] != ranked(chose_0)[1]


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


def test_the_layer_softmax_normalises_each_position_over_its_own_layer(tiny_decoder):
    """Under ``layer`` a step's log-probs sum to 1 over the position's layer (and ``<sid_end>`` after
    the first code) and are -inf elsewhere; the same SIDs then score higher than under ``full``,
    whose mass also sits on the other layers' codes."""
    decoder, trie, mask, _ = tiny_decoder
    vocab = mask.vocab
    hidden = torch.randn(3, decoder.model.config.hidden_size)
    for depth in range(vocab.num_layers + 1):
        logp = sid_log_probs(decoder.model, hidden, vocab, depth)
        own = torch.zeros(vocab.num_local, dtype=torch.bool)
        own[vocab.step_ids(depth)] = True
        torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3))
        assert torch.isinf(logp[:, ~own]).all() and torch.isfinite(logp[:, own]).all()
    assert vocab.step_ids(0) == list(range(vocab.sizes[0])) and vocab.step_ids(vocab.num_layers) == [vocab.end_local]
    sids = _all_sids(trie)
    prompt = decoder.prompt_ids("compact kettle", [])
    layer = dataclasses.replace(decoder, spec=dataclasses.replace(decoder.spec, sid_softmax="layer"))
    assert all(a > b for a, b in zip(score_sids(layer, prompt, sids, vocab), score_sids(decoder, prompt, sids, vocab)))
