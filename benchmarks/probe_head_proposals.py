"""Does the item head find targets the beams miss? The trainer's own choice of the item weight
(as ``Validation.measure_weights`` scores it on the validation cases: Recall@10, then MRR@10) with
the head's proposals (``head_proposals_per_item`` = P) at each P; P = 0 is the pipeline without
them. Tail Recall@10 beside.

Each P decodes the validation cases as the trainer does (its 20 beams, the decoder's length
penalty; weight 0 alone, the positive weights sharing one decode), so its row is what training
would have chosen and scored had P been the default. Validation cases only (history ``item_ids[:-2]`` -> ``item_ids[-2]``, the
trainer's seeded sample):

    OMP_NUM_THREADS=1 python benchmarks/probe_head_proposals.py --store eval-games/methods/sa2crq/store \\
        --data ../shared/data/games --seed 0 [--proposals 0,1,2,4] [--weights 0,0.25,0.5,1,2,4]
"""

from __future__ import annotations

import time

import numpy as np
from probe_args import hits_by_weight, open_store, probe_parser

from indexer.training.examples import load_training_data
from indexer.training.validation import Validation, first_best, sample_cases
from sidcore.engines.torch_engine import TorchEngine
from sidcore.retriever import Retriever


def main() -> None:
    ap = probe_parser(__doc__)
    ap.add_argument("--proposals", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2, 4])
    ap.add_argument("--weights", type=lambda s: [float(x) for x in s.split(",")], default=[0, 0.25, 0.5, 1, 2, 4],
                    help="The item weights the trainer chooses among (its --item-weights).")
    args = ap.parse_args()

    served = open_store(args.store)
    decoder, trie = served.decoder, served.trie
    head_of = dict(zip(served.art.item_ids.tolist(), served.art.head.tolist()))
    cases = sample_cases(load_training_data(args.data).valid, args.cases, args.seed)
    tail = np.array([not head_of.get(c.target, False) for c in cases])
    lp, weights = decoder.spec.length_penalty, args.weights
    # as the trainer chooses: a head trained on text prompts among the positive weights
    eligible = [w for w in weights if w > 0] if decoder.spec.item_head_queries and any(weights) else weights
    print(f"decoder {decoder.version} (own W {decoder.spec.item_weight:g}, lp {lp:g}), {len(cases)} validation cases ({tail.sum()} tail)")
    for p in args.proposals:
        t0 = time.perf_counter()
        scores, tail_recall = {}, {}
        for w in weights:  # as Validation.measure_weights: weight 0 decodes alone, the positive ones share a decode
            if w in scores:
                continue
            group = [w] if w == 0 else [v for v in weights if v > 0]
            v = Validation(cases, head_proposals_per_item=p)
            r = Retriever(decoder, TorchEngine(decoder, served.mask, length_penalty=lp), beam_width=v.beam_width,
                          max_beam_width=max(v.beam_width, v.k), item_weight=group[0], head_proposals_per_item=p)
            hit, rr = hits_by_weight(r, trie, cases, v.k, v.batch, group)
            for j, u in enumerate(group):
                scores[u] = (hit[:, j].mean(), rr[:, j].mean())
                tail_recall[u] = hit[tail, j].mean() if tail.any() else float("nan")
        chosen = first_best(eligible, scores)
        row = ", ".join(f"{w:g}: {scores[w][0]:.4f} / {scores[w][1]:.4f} / {tail_recall[w]:.4f}" for w in weights)
        print(f"proposals {p} x k: chosen W {chosen:g} -> R@10 {scores[chosen][0]:.4f}, MRR@10 {scores[chosen][1]:.4f}, "
              f"tail R@10 {tail_recall[chosen]:.4f}   (R@10 / MRR@10 / tail by W: {row}; {time.perf_counter() - t0:.0f} s)", flush=True)

if __name__ == "__main__":
    main()
