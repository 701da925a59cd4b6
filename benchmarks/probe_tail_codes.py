"""Where an index puts the tail: how often the decoder is trained towards a target's SID prefixes.

No decoding, only the index and the training sequences. For head and tail validation targets
(history ``item_ids[:-2]`` -> ``item_ids[-2]``, the decoder's seeded sample; never a test case)
it prints:

- ``first code share``: the target's first code's share of the training targets, times the
  number of base first-layer codes (1 = an even share);
- ``prefix targets``: training targets under the target's two-code prefix;
- ``in extension``: targets whose first code is one of ACRQ's tail-only extension codewords
  (those past the base codebook; 0 for the one-stage quantizers).

    python benchmarks/probe_tail_codes.py --store eval-games/methods/sa2crq/store --data ../shared/data/games
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from probe_args import head_flags, probe_parser

from indexer.training.examples import load_training_data
from indexer.training.validation import sample_cases
from model_store import Store
from sidcore.index.artifact import load_index


def main() -> None:
    ap = probe_parser(__doc__)
    args = ap.parse_args()

    art = load_index(Store(args.store))
    row = {item: i for i, item in enumerate(art.item_ids.tolist())}
    base = art.config["quantizer"]["sizes"][0]  # the base codebook; ACRQ's extension codewords follow it
    first, prefix = Counter(), Counter()
    data = load_training_data(args.data)
    for seq in data.sequences:
        for item in seq[1:]:
            codes = art.codes[row[item]]
            first[codes[0]] += 1
            prefix[tuple(codes[:2])] += 1
    total = sum(first.values())
    cases = sample_cases(data.valid, args.cases, args.seed)
    print(f"index {art.version}: first-layer codes {art.sizes[0]} ({base} base), {total:,} training targets, {len(cases)} validation cases")
    is_head = head_flags(art, [c.target for c in cases])
    for name, want in (("head", True), ("tail", False)):
        codes = np.array([art.codes[row[c.target]] for c, h in zip(cases, is_head) if h == want])
        if not len(codes):
            continue
        share = np.array([first[c[0]] / total * base for c in codes])
        under = np.array([prefix[tuple(c[:2])] for c in codes])
        print(f"{name:<5} {len(codes):>5} cases  first code share median {np.median(share):.2f}  "
              f"prefix targets median {np.median(under):.0f}  in extension {(codes[:, 0] >= base).mean():.3f}")
    tail = ~art.head
    only = set(art.codes[tail, 0]) - set(art.codes[art.head, 0])
    print(f"first codes held by tail items only: {len(only)}, holding {int(np.isin(art.codes[tail, 0], list(only)).sum()):,} of {int(tail.sum()):,} tail items")


if __name__ == "__main__":
    main()
