"""The item head's popularity adjustment (``Retriever(item_prior=tau)``, ``--item-priors``) on
validation cases, for a trained decoder (no retraining): the head's logit of each item lowered by
``tau * log p(item)``, p being the item's share of the training interactions (add-one smoothed).
The head's softmax learned the data's popularity and, through the rules teacher, the counts' own;
the adjustment (logit adjustment, Menon et al. 2021) asks whether ranking by the head's lift over
popularity finds tail targets without losing head ones. It changes both what the head proposes
(its best items that the beams missed) and how it re-ranks.

For each ``tau`` the item weight is chosen as the trainer chooses it (``Validation``: 20 beams,
the decoder's length penalty, Recall@10 then MRR@10 over ``--weights``), so a row is what training
would have served with the adjustment; since a larger grid chosen on the same cases flatters
itself, two-fold lines then score each half of the cases at the pair the other half chose, for the
weights alone and for every (tau, W) pair. Validation cases only (history ``item_ids[:-2]`` ->
``item_ids[-2]``, the trainer's seeded sample):

    OMP_NUM_THREADS=1 python benchmarks/probe_item_prior.py --store eval-games/methods/sa2crq/store \\
        --data ../shared/data/games --seed 0 [--taus 0,0.1,0.25,0.5,1] [--weights 0,0.25,0.5,1,2,4]

``--max-beam 40`` decodes the re-ranked requests as the service decodes a k = 10 one (4 beams per
requested item, ``Retriever``'s plan) instead of the trainer's 20 beams; ``--taus 0`` then reads
the weights alone at the served width.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from probe_args import best_pair, head_flags, head_tail, hits_by_weight, open_store, probe_parser, two_fold

from indexer.training.examples import load_training_data
from indexer.training.validation import Validation, sample_cases
from sidcore.decoder.bundle import Decoder
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index.artifact import IndexArtifact
from sidcore.retriever import Retriever


def with_counts(decoder: Decoder, art: IndexArtifact) -> Decoder:
    """``decoder`` with its item table's interaction counts, taken from its index where the decoder
    predates them (stored with it since the item prior)."""
    if decoder.items.popularity is not None:
        return decoder
    popularity = np.zeros(len(decoder.items.ids))
    rows = decoder.items.rows(art.item_ids.tolist())
    popularity[rows[rows >= 0]] = art.popularity[rows >= 0]
    return dataclasses.replace(decoder, items=dataclasses.replace(decoder.items, popularity=popularity))


def main() -> None:
    ap = probe_parser(__doc__)
    ap.add_argument("--taus", type=lambda s: [float(x) for x in s.split(",")], default=[0, 0.1, 0.25, 0.5, 1])
    ap.add_argument("--weights", type=lambda s: [float(x) for x in s.split(",")], default=[0, 0.25, 0.5, 1, 2, 4],
                    help="The item weights the trainer chooses among (its --item-weights).")
    ap.add_argument("--max-beam", type=int, default=0,
                    help="Decode re-ranked requests with up to this many beams, 4 per requested item (40: a served "
                         "k = 10 request); 0: the trainer's Validation (20 beams).")
    args = ap.parse_args()
    if args.max_beam < 0:
        ap.error(f"--max-beam must be >= 0, got {args.max_beam}")

    served = open_store(args.store)
    decoder, trie = with_counts(served.decoder, served.art), served.trie
    cases = sample_cases(load_training_data(args.data).valid, args.cases, args.seed)
    is_head = head_flags(served.art, [c.target for c in cases])
    v = Validation(cases)
    engine = TorchEngine(decoder, served.mask, length_penalty=decoder.spec.length_penalty)
    widest = max(v.beam_width, v.k, args.max_beam)
    print(f"decoder {decoder.version} (own W {decoder.spec.item_weight:g}), {len(cases)} validation cases "
          f"({int(is_head.sum())} head / {int((~is_head).sum())} tail), re-ranked requests at up to {widest} beams; "
          "R@10 all / head / tail at the chosen W")
    # per case, hit and reciprocal rank of each (tau, W); W 0 ranks without the head, so it is decoded once
    hit, rr = {}, {}
    positive = [w for w in args.weights if w > 0]
    if 0 in args.weights:
        r = Retriever(decoder, engine, beam_width=v.beam_width, max_beam_width=widest, item_weight=0.0)
        h0, r0 = hits_by_weight(r, trie, cases, v.k, v.batch, [0.0])
        for tau in args.taus:
            hit[tau, 0.0], rr[tau, 0.0] = h0[:, 0], r0[:, 0]
    for tau in args.taus:
        t0 = time.perf_counter()
        r = Retriever(decoder, engine, beam_width=v.beam_width, max_beam_width=widest, item_weight=positive[0],
                      head_proposals_per_item=v.head_proposals_per_item, item_prior=tau)
        h, rk = hits_by_weight(r, trie, cases, v.k, v.batch, positive)
        for j, w in enumerate(positive):
            hit[tau, w], rr[tau, w] = h[:, j], rk[:, j]
        chosen = best_pair([(tau, w) for w in args.weights], hit, rr, np.ones(len(cases), bool))
        row = ", ".join(f"{w:g}: {hit[tau, w].mean():.4f}" for w in args.weights)
        print(f"tau {tau:g}: chosen W {chosen[1]:g} -> R@10 {hit[chosen].mean():.4f}, MRR@10 {rr[chosen].mean():.4f}, "
              f"head / tail {head_tail(hit[chosen], is_head)}   (R@10 by W: {row}; {time.perf_counter() - t0:.0f} s)", flush=True)
    for name, grid in (("weights alone (tau 0)", [(args.taus[0], w) for w in args.weights]),
                       ("every (tau, W) pair", [(t, w) for t in args.taus for w in args.weights])):
        got, picks = two_fold(best_pair, grid, hit, rr)
        print(f"two-fold, {name}: R@10 {got.mean():.4f}, head / tail {head_tail(got, is_head)}; "
              f"chosen {', '.join(f'tau {t:g} W {w:g}' for t, w in picks)}", flush=True)


if __name__ == "__main__":
    main()
