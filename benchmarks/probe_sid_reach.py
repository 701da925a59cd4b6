"""Where a trained decoder loses validation targets: in the beams, or inside a SID.

For each validation case (history ``item_ids[:-2]`` -> ``item_ids[-2]``, never a test case) it
decodes k = 100 items with the shipped scoring, then prints per head / tail target:

- ``item@10``, ``item@100``: the target among the items returned;
- ``SID@10``: the target's SID among the SIDs of the first 10 items. Where it equals ``item@10``,
  the order of items inside a SID never costs a hit, and only the beams' SID scores matter;
- ``SID kept``: the target's SID among the beams at all;
- ``items/SID``: mean items sharing the target's SID.

    OMP_NUM_THREADS=1 python benchmarks/probe_sid_reach.py --store eval-games/methods/sa2crq/store --data ../shared/data/games [--cases 2000]
"""

from __future__ import annotations

import numpy as np
from probe_args import head_flags, open_store, probe_parser

from indexer.training.examples import load_training_data
from indexer.training.validation import sample_cases
from sidcore.retriever import Query


def main() -> None:
    ap = probe_parser(__doc__)
    args = ap.parse_args()

    served = open_store(args.store)
    decoder, art, trie = served.decoder, served.art, served.trie
    cases = sample_cases(load_training_data(args.data).valid, args.cases, args.seed)
    is_head = head_flags(art, [c.target for c in cases])
    retriever = served.retriever(100)  # as served: the decoder's own item weight

    rows = []  # per case: head, item@10, item@100, SID@10, SID kept, items in the target's SID
    for i in range(0, len(cases), 32):
        chunk = cases[i : i + 32]
        results, _ = retriever.retrieve(trie, [Query(c.query, c.history, k=100) for c in chunk])
        for c, r, head in zip(chunk, results, is_head[i : i + 32]):
            node = trie.node_of_item(c.target)
            items = [h.item_id for h in r.items]
            rows.append((head, c.target in items[:10], c.target in items,
                         node >= 0 and trie.sid_of(node) in {tuple(h.sid) for h in r.items[:10]},
                         any(h.node == node for h in r.sids), len(trie.items_of(node)) if node >= 0 else 0))
    a = np.array(rows, dtype=float)
    print(f"decoder {decoder.version}, {len(a)} validation cases, 100 beams")
    for name, keep in (("all", np.ones(len(a), bool)), ("head", a[:, 0] == 1), ("tail", a[:, 0] == 0)):
        b = a[keep]
        if len(b):
            print(f"{name:<5} {len(b):>5} cases  item@10 {b[:, 1].mean():.4f}  item@100 {b[:, 2].mean():.4f}  "
                  f"SID@10 {b[:, 3].mean():.4f}  SID kept {b[:, 4].mean():.4f}  items/SID {b[:, 5].mean():.2f}")


if __name__ == "__main__":
    main()
