"""Validation Recall@10 of a trained decoder for head and tail targets apart: the figure model
selection reads (the decoder's seeded sample of validation cases, history ``item_ids[:-2]`` ->
``item_ids[-2]``; never a test case), split by the index's head flag of each target, at the
decoder's own length penalty and item weight, with the trainer's 20 beams.

    OMP_NUM_THREADS=1 python benchmarks/probe_valid_groups.py --store eval-games/methods/sa2crq/store --data ../shared/data/games --seed 2
"""

from __future__ import annotations

from probe_args import head_flags, open_store, probe_parser

from indexer.training.examples import load_training_data
from indexer.training.validation import Validation, sample_cases


def main() -> None:
    ap = probe_parser(__doc__)
    args = ap.parse_args()

    served = open_store(args.store)
    cases = sample_cases(load_training_data(args.data).valid, args.cases, args.seed)
    is_head = head_flags(served.art, [c.target for c in cases])
    groups = {"head": [c for c, h in zip(cases, is_head) if h], "tail": [c for c, h in zip(cases, is_head) if not h]}
    print(f"decoder {served.decoder.spec.index_version}: item weight {served.decoder.spec.item_weight}, "
          f"length penalty {served.decoder.spec.length_penalty}")
    # each group decoded once; overall is their case-weighted mean
    scored = {name: (len(group), *Validation(group).measure(served.decoder, served.trie)) for name, group in groups.items()}
    scored["overall"] = (len(cases), *(sum(n * v[i] for n, *v in scored.values()) / len(cases) for i in (0, 1)))
    for name, (n, recall, mrr) in scored.items():
        print(f"{name:<8} {n:>5} cases  Recall@10 {recall:.4f}  hits {round(recall * n):>4}  MRR@10 {mrr:.4f}")


if __name__ == "__main__":
    main()
