"""Retriever on its own: beam plans, unknown history ids, one mask per snapshot, items in SID order
(inside a SID: by similarity to the request, or by popularity), and the item head's re-ranking."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from indexer.evaluation.cli import eval_cmd
from indexer.evaluation.config import EvalConfig
from service.settings import Settings
from sidcore.decoder.bundle import DecoderSpec
from sidcore.engines.torch_engine import TorchEngine
from sidcore.errors import DataError
from sidcore.index.trie import Trie
from sidcore.retriever import FUSED_BEAMS_PER_ITEM, HEAD_PROPOSALS_PER_ITEM, IndexMismatch, Query, Retriever, UnknownItems


@pytest.fixture(scope="module")
def retriever(tiny_stack):
    return Retriever(tiny_stack.decoder, TorchEngine(tiny_stack.decoder), beam_width=8, max_beam_width=32)


def test_beam_plans(retriever):
    assert retriever.plan(Query("q", k=3)) == (8, 3)  # the default beam, k SIDs
    assert retriever.plan(Query("q", k=20)) == (20, 20)  # k above the default raises the beam to k
    assert retriever.plan(Query("q", k=500)) == (32, 32)  # ... up to the widest
    assert retriever.plan(Query("q", k=10, beam_width=4)) == (4, 4)
    with pytest.raises(DataError, match="beam_width must be in"):
        retriever.plan(Query("q", k=5, beam_width=33))


def test_unknown_history_ids_name_their_positions(retriever, tiny_stack):
    known = tiny_stack.art.item_ids[0]
    with pytest.raises(UnknownItems) as e:
        retriever.prompt(tiny_stack.trie, Query(history=(known, "nope-1", known, "nope-2")))
    assert e.value.positions == [1, 3] and e.value.ids == ["nope-1", "nope-2"]


def test_items_follow_sid_order_and_stop_at_k(tiny_stack):
    """By popularity: each SID's items in the index's order."""
    retriever = Retriever(tiny_stack.decoder, TorchEngine(tiny_stack.decoder), beam_width=8, max_beam_width=32, within="popularity")
    trie = tiny_stack.trie
    history = tuple(tiny_stack.art.item_ids[:3])
    (result,), stats = retriever.retrieve(trie, [Query(history=history, k=7, exclude_history=False)])
    assert result.index_version == trie.version and result.beam_width == 8 and stats.steps >= 1
    assert len(result.items) == min(7, sum(len(trie.items_of(h.node)) for h in result.sids))
    expected = [(item, h.sid) for h in result.sids for item in trie.items_of(h.node)][:7]
    assert [(i.item_id, i.sid) for i in result.items] == expected
    scores = [h.score for h in result.sids]
    assert scores == sorted(scores, reverse=True)


def test_items_of_a_sid_are_ordered_by_similarity_to_the_history(retriever, tiny_stack):
    """The default: inside each SID, the items closest (cosine) to the history's mean embedding first."""
    trie, items = tiny_stack.trie, tiny_stack.decoder.items
    history = tuple(tiny_stack.art.item_ids[:3])
    (result,), _ = retriever.retrieve(trie, [Query(history=history, k=30, exclude_history=False)])
    by = items.vectors[items.rows(history)].mean(0)
    by /= np.linalg.norm(by)
    expected = []
    for h in result.sids:
        members = trie.items_of(h.node)
        expected += sorted(members, key=lambda i: -float(items.vectors[items.row[i]] @ by))
    assert [i.item_id for i in result.items] == expected[:30]
    assert any(len(trie.items_of(h.node)) > 1 for h in result.sids), "some SID should hold several items"


def test_one_mask_per_snapshot_and_layout_checked(retriever, tiny_stack):
    trie = tiny_stack.trie
    assert retriever.mask(trie) is retriever.mask(trie)
    art = tiny_stack.art
    other = Trie.from_items(art.item_ids, art.codes, art.lengths, (*art.sizes[:-1], art.sizes[-1] + 1), version="other")
    with pytest.raises(IndexMismatch, match="codebook sizes"):
        retriever.mask(other)


def _head_logits(decoder, prompt, query_vectors=None) -> dict[str, float]:
    """The next-item head written out: a full forward over the prompt's input embeddings, its last
    hidden state against every item-table row's output (projected MiniLM + learned embedding)."""
    with torch.inference_mode():
        embeds, attn = decoder.prefill([prompt], query_vectors)
        state = decoder.model.model(inputs_embeds=embeds, attention_mask=attn).last_hidden_state[0, -1]
        logits = (decoder.item_outputs() @ state).tolist()
    return dict(zip(decoder.items.ids, logits))


def test_the_item_head_reranks_a_history_requests_decoded_items(tiny_stack):
    """With an item weight W, a history request finishes every beam and ranks all their items by
    SID score + W x item-head logit (the SIDs' own order breaking ties); W = 0 is the SID order."""
    decoder, trie = tiny_stack.decoder, tiny_stack.trie
    history = tuple(tiny_stack.art.item_ids[:4])
    q = Query(history=history, k=6)
    plain = Retriever(decoder, TorchEngine(decoder), beam_width=8, max_beam_width=32, item_weight=0.0)
    fused = Retriever(decoder, TorchEngine(decoder), beam_width=8, max_beam_width=32, item_weight=0.7, fused_beams_per_item=2,
                      head_proposals_per_item=0)
    # every beam is a candidate, and there are fused_beams_per_item x k of them unless the request or the cap says otherwise
    assert plain.plan(q) == (8, 6) and fused.plan(q) == (12, 12)
    assert fused.plan(dataclasses.replace(q, beam_width=8)) == (8, 8) and fused.plan(dataclasses.replace(q, k=20)) == (32, 32)
    assert fused.plan(Query("text only", k=6)) == (8, 6)  # this decoder's head is trained on histories only

    (result,), _ = fused.retrieve(trie, [q])
    (wide,), _ = plain.retrieve(trie, [dataclasses.replace(q, k=1000)])  # every candidate, in SID order
    sids = {h.sid for h in result.sids}
    candidates = [i for i in wide.items if i.sid in sids]
    logit = _head_logits(decoder, fused.prompt(trie, q))
    score = np.array([i.score + 0.7 * logit[i.item_id] for i in candidates])
    expected = [candidates[j].item_id for j in np.argsort(-score, kind="stable")[:6]]
    assert [i.item_id for i in result.items] == expected
    assert [i.score for i in result.items] == pytest.approx(sorted(score, reverse=True)[:6], abs=1e-4)
    assert not set(history) & {i.item_id for i in result.items}  # exclusions hold as before
    assert [i.item_id for i in result.items] != [i.item_id for i in wide.items[:6]], "the head should move something here"


def test_beams_per_item_size_a_reranked_requests_candidates(tiny_stack):
    """``fused_beams_per_item`` x k beams for a request the head re-ranks, up to the widest; the
    eval, the service and the constant agree on the default."""
    decoder = tiny_stack.decoder
    q = Query(history=tuple(tiny_stack.art.item_ids[:4]), k=6)
    for per_item, plan in ((1, (8, 8)), (2, (12, 12)), (3, (18, 18)), (6, (32, 32))):
        r = Retriever(decoder, TorchEngine(decoder), beam_width=8, max_beam_width=32, item_weight=0.7, fused_beams_per_item=per_item)
        assert r.plan(q) == plan
    with pytest.raises(ValueError, match="fused_beams_per_item"):
        Retriever(decoder, TorchEngine(decoder), fused_beams_per_item=0)
    option = next(p for p in eval_cmd.params if p.name == "beams_per_item")
    assert option.default == EvalConfig().fused_beams_per_item == Settings().fused_beams_per_item == FUSED_BEAMS_PER_ITEM
    with pytest.raises(DataError, match="fused_beams_per_item"):
        EvalConfig(fused_beams_per_item=0)


def test_one_decode_ranks_under_any_item_weight(tiny_stack):
    """``decode`` then ``rank(decoded, W)`` answers as a retriever built with weight W: the positive
    weights plan the same beams, so choosing a weight needs one decode, not one per weight."""
    decoder, trie = tiny_stack.decoder, tiny_stack.trie
    queries = [Query(history=tuple(tiny_stack.art.item_ids[i : i + 3]), k=6) for i in (0, 5, 9)]
    shared = Retriever(decoder, TorchEngine(decoder), beam_width=8, max_beam_width=32, item_weight=0.25, fused_beams_per_item=2)
    decoded = shared.decode(trie, queries)
    assert decoded.widths == [12, 12, 12] and sorted(decoded.states) == [0, 1, 2]
    moved = False
    for w in (0.25, 1.0, 4.0):
        alone, _ = Retriever(decoder, TorchEngine(decoder), beam_width=8, max_beam_width=32, item_weight=w,
                             fused_beams_per_item=2).retrieve(trie, queries)
        ranked = shared.rank(decoded, w)
        assert [[i.item_id for i in r.items] for r in ranked] == [[i.item_id for i in r.items] for r in alone]
        assert [[i.score for i in r.items] for r in ranked] == [pytest.approx([i.score for i in r.items], abs=1e-6) for r in alone]
        assert [r.sids for r in ranked] == [r.sids for r in alone]
        moved |= [i.item_id for i in ranked[0].items] != [i.item_id for i in shared.rank(decoded)[0].items]
    assert moved, "some weight should reorder the first request's items here"


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_sid_scores_are_what_the_beams_score(tiny_stack, length_penalty):
    """``Decoder.sid_scores`` scores a SID as beam search does when it finishes one: the decoded
    SIDs' own scores come back from one forward pass, under either length penalty."""
    decoder, trie = tiny_stack.decoder, tiny_stack.trie
    r = Retriever(decoder, TorchEngine(decoder, length_penalty=length_penalty), beam_width=16, max_beam_width=16, item_weight=0.0)
    q = Query(history=tuple(tiny_stack.art.item_ids[3:7]), k=16)
    (result,), _ = r.retrieve(trie, [q])
    sids = [h.sid for h in result.sids]
    assert len({len(s) for s in sids}) > 1, "SARQ gives SIDs of several lengths here"
    scores = decoder.sid_scores(r.prompt(trie, q), None, sids) / (np.array([len(s) for s in sids]) + 1) ** length_penalty
    assert scores == pytest.approx([h.score for h in result.sids], abs=1e-4)


def test_the_head_proposes_items_the_beams_missed(tiny_stack):
    """Under ``head_proposals_per_item``, the head's best items whose SIDs the beams did not reach
    join a re-ranked request's candidates, their SIDs scored by the decoder; few beams and a large
    weight let a proposal into the answer. Bad values are refused."""
    decoder, trie = tiny_stack.decoder, tiny_stack.trie
    kwargs = dict(beam_width=3, max_beam_width=3, item_weight=50.0)
    plain = Retriever(decoder, TorchEngine(decoder), head_proposals_per_item=0, **kwargs)
    proposing = Retriever(decoder, TorchEngine(decoder), head_proposals_per_item=2, **kwargs)
    # where the head agrees with the beams no proposal beats them: the first of ten histories where one does
    for start in range(0, 40, 4):
        history = tuple(tiny_stack.art.item_ids[start : start + 4])
        q = Query(history=history, k=3)
        decoded = proposing.decode(trie, [q])
        (with_head,), ((without,), _) = proposing.rank(decoded), plain.retrieve(trie, [q])
        if [i.item_id for i in with_head.items] != [i.item_id for i in without.items]:
            break
    beams, proposed = decoded.hits[0], decoded.proposed[0]
    assert proposed and not {h.node for h in beams} & {h.node for h in proposed}
    logit = _head_logits(decoder, proposing.prompt(trie, q))
    allowed = [i for i in sorted(logit, key=logit.get, reverse=True) if i not in history]
    best = allowed[:6]  # 2 x k of the items the request may return
    assert {trie.node_of_item(i) for i in best} - {h.node for h in beams} == {h.node for h in proposed}
    assert [h.score for h in proposed] == pytest.approx(list(decoder.sid_scores(proposing.prompt(trie, q), None, [h.sid for h in proposed])), abs=1e-5)
    assert without.sids == beams  # proposals change the candidates, never the decode
    assert [i.item_id for i in with_head.items] != [i.item_id for i in without.items]
    assert {i.sid for i in with_head.items} & {h.sid for h in proposed}
    assert not set(history) & {i.item_id for i in with_head.items}
    with pytest.raises(ValueError, match="head_proposals_per_item"):
        Retriever(decoder, TorchEngine(decoder), head_proposals_per_item=-1)
    option = next(p for p in eval_cmd.params if p.name == "head_proposals")
    assert option.default == EvalConfig().head_proposals_per_item == Settings().head_proposals_per_item == HEAD_PROPOSALS_PER_ITEM
    with pytest.raises(DataError, match="head_proposals_per_item"):
        EvalConfig(head_proposals_per_item=-1)


def test_a_head_trained_on_text_prompts_reranks_text_requests_too(tiny_stack):
    """``item_head_queries`` (``--item-loss-queries``): a text-only request is fused like a history
    one, its state the text prompt's last position; decoders without it leave text requests alone."""
    decoder, trie = tiny_stack.decoder, tiny_stack.trie
    both = dataclasses.replace(decoder, spec=dataclasses.replace(decoder.spec, item_head_queries=True))
    q = Query(tiny_stack.catalog.texts[3], k=6)
    fused = Retriever(both, TorchEngine(both), beam_width=8, max_beam_width=32, item_weight=0.7, fused_beams_per_item=2,
                      head_proposals_per_item=0)
    plain = Retriever(both, TorchEngine(both), beam_width=8, max_beam_width=32, item_weight=0.0)
    assert fused.plan(q) == (12, 12) and plain.plan(q) == (8, 6)
    assert Retriever(decoder, TorchEngine(decoder), beam_width=8, item_weight=0.7).plan(q) == (8, 6)

    (result,), _ = fused.retrieve(trie, [q])
    (wide,), _ = plain.retrieve(trie, [dataclasses.replace(q, k=1000)])
    sids = {h.sid for h in result.sids}
    candidates = [i for i in wide.items if i.sid in sids]
    qv = fused.query_vectors([q])
    logit = _head_logits(both, fused.prompt(trie, q, None if qv is None else qv[0]), qv)
    score = np.array([i.score + 0.7 * logit[i.item_id] for i in candidates])
    assert [i.item_id for i in result.items] == [candidates[j].item_id for j in np.argsort(-score, kind="stable")[:6]]
    assert [i.item_id for i in result.items] != [i.item_id for i in wide.items[:6]], "the head should move something here"
    spec = decoder.spec.to_json()
    assert DecoderSpec.from_json(spec).item_head_queries is False
    assert DecoderSpec.from_json({k: v for k, v in spec.items() if k != "item_head_queries"}).item_head_queries is False  # older decoders
    assert DecoderSpec.from_json(both.spec.to_json()).item_head_queries is True


def test_the_item_weight_defaults_to_the_decoders_own_and_refuses_bad_values(tiny_stack):
    decoder = tiny_stack.decoder
    assert decoder.spec.item_weight == 0.0 and Retriever(decoder, TorchEngine(decoder)).item_weight == 0.0
    chose = dataclasses.replace(decoder, spec=dataclasses.replace(decoder.spec, item_weight=0.5))
    assert Retriever(chose, TorchEngine(chose)).item_weight == 0.5
    assert Retriever(chose, TorchEngine(chose), item_weight=0).item_weight == 0.0
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="item_weight"):
            Retriever(decoder, TorchEngine(decoder), item_weight=bad)
    spec = decoder.spec.to_json()
    assert DecoderSpec.from_json(spec).item_weight == 0.0
    assert DecoderSpec.from_json({k: v for k, v in spec.items() if k != "item_weight"}).item_weight == 0.0  # decoders saved before
    with pytest.raises(DataError, match="item_weight"):
        DecoderSpec.from_json({**spec, "item_weight": -0.5})


def test_an_item_the_head_never_saw_gets_the_mean_logit(tiny_stack):
    """A cold-start insert has no row in the decoder's item table: the head neither lifts nor sinks it."""
    decoder = tiny_stack.decoder
    known = list(decoder.items.ids[:3])
    state = decoder.item_states([decoder.prompt_ids(None, [(known[0], None)])], None)[0]
    logits = decoder.item_logits(state, [*known, "cold-start-1"])
    assert logits[3] == pytest.approx(logits[:3].mean()) and len(set(np.round(logits[:3], 6))) == 3


def test_best_first_reads_past_the_likely_best_in_order():
    """The head's proposals walk its items from the best; a filter that keeps few items reads past
    the partitioned ``likely`` best, still in order."""
    from sidcore.retriever import _best_first

    scores = np.random.default_rng(0).normal(size=50)
    expected = np.argsort(-scores, kind="stable").tolist()
    for likely in (3, 10, 50, 80):
        assert list(_best_first(scores, likely)) == expected


def test_the_item_prior_ranks_and_proposes_by_the_heads_lift_over_popularity(tiny_stack):
    """``item_prior`` p: the head's logit of each item lowered by p x its log share of the training
    interactions, wherever the head ranks (``Retriever.items``) and proposes (``Retriever.propose``);
    the decoder carries the index's interaction counts. Bad values are refused."""
    decoder, trie, art = tiny_stack.decoder, tiny_stack.trie, tiny_stack.art
    rows = decoder.items.rows(art.item_ids.tolist())
    assert decoder.items.popularity[rows] == pytest.approx(art.popularity)
    counts = np.asarray(art.popularity) + 1.0
    assert decoder.items.log_prior[rows] == pytest.approx(np.log(counts / counts.sum()))
    q = Query(history=tuple(art.item_ids[3:7]), k=6)
    kwargs = dict(beam_width=3, max_beam_width=3, item_weight=50.0, head_proposals_per_item=2)
    plain = Retriever(decoder, TorchEngine(decoder), **kwargs)
    adjusted = Retriever(decoder, TorchEngine(decoder), item_prior=2.0, **kwargs)
    assert plain.item_prior == 0.0 == decoder.spec.item_prior
    state = decoder.item_states([plain.prompt(trie, q)], None)[0]
    ids = list(art.item_ids[:20])
    shift = 2.0 * decoder.items.log_prior[decoder.items.rows(ids)]
    assert decoder.item_logits(state, ids, 2.0) == pytest.approx(decoder.item_logits(state, ids) - shift, abs=1e-5)
    assert decoder.item_logits_all(state, 2.0) == pytest.approx(decoder.item_logits_all(state) - 2.0 * decoder.items.log_prior, abs=1e-4)
    # the adjusted head proposes and ranks by the adjusted logits: an answer's order is SID score + W x them
    (with_prior,), _ = adjusted.retrieve(trie, [q])
    (without,), _ = plain.retrieve(trie, [q])
    logit = decoder.item_logits(state, [i.item_id for i in with_prior.items], 2.0)
    decoded = adjusted.decode(trie, [q])
    sid_score = {h.sid: h.score for h in decoded.hits[0] + decoded.proposed[0]}
    assert [i.score for i in with_prior.items] == pytest.approx([sid_score[i.sid] + 50.0 * v for i, v in zip(with_prior.items, logit)], abs=1e-3)
    def mean_log_prior(result):
        return float(np.mean(decoder.items.log_prior[decoder.items.rows([i.item_id for i in result.items])]))

    assert mean_log_prior(with_prior) < mean_log_prior(without), "a large prior should answer less popular items"
    chose = dataclasses.replace(decoder, spec=dataclasses.replace(decoder.spec, item_prior=0.5))
    assert Retriever(chose, TorchEngine(chose)).item_prior == 0.5 and Retriever(chose, TorchEngine(chose), item_prior=0).item_prior == 0.0
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="item_prior"):
            Retriever(decoder, TorchEngine(decoder), item_prior=bad)
    older = dataclasses.replace(decoder, items=dataclasses.replace(decoder.items, popularity=None))  # saved before the counts
    assert older.item_logits_all(state, 2.0) == pytest.approx(decoder.item_logits_all(state), abs=1e-4)
    with pytest.raises(ValueError, match="no interaction counts"):
        Retriever(older, TorchEngine(older), item_prior=0.5)
    spec = decoder.spec.to_json()
    assert DecoderSpec.from_json({k: v for k, v in spec.items() if k != "item_prior"}).item_prior == 0.0  # decoders saved before
    with pytest.raises(DataError, match="item_prior"):
        DecoderSpec.from_json({**spec, "item_prior": -0.5})
