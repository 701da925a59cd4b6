"""What the item head's re-ranking costs a request: ``Retriever.retrieve`` with the decoder's
item weight against the same retriever at weight 0 (SID scores alone), at each
``--beams-per-item`` (the candidates a re-ranked request decodes: that many beams per item) and
``--head-proposals`` (items the head proposes per requested item beside the beams, their SIDs
scored by one more forward pass).

Under a weight a history request finishes every beam (its candidates) instead of its first k
SIDs, runs one more forward pass over its prompt for the head's state, and scores its candidates
against the item table. For ``--requests`` validation histories (item ``[-2]`` cases), one
request at a time, k = ``--k`` with the service's default ``--beam``, the retrievers are interleaved so
all see the same machine noise; prints per-request p50 / p99 ms and their ratios to weight 0.

    OMP_NUM_THREADS=1 python benchmarks/bench_item_weight.py --store eval-games/methods/sa2crq/store --data ../shared/data/games \\
        [--weight W] [--requests 300] [--beams-per-item 2,4] [--head-proposals 0,1]
"""

from __future__ import annotations

import time

import numpy as np
from probe_args import open_store, probe_parser

from indexer.training.examples import load_training_data
from indexer.training.validation import sample_cases
from sidcore.engines.torch_engine import TorchEngine
from sidcore.retriever import FUSED_BEAMS_PER_ITEM, HEAD_PROPOSALS_PER_ITEM, Query, Retriever


def main() -> None:
    ap = probe_parser(__doc__)
    ap.add_argument("--weight", type=float, help="Default: the decoder's own (DecoderSpec.item_weight), else 0.5.")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--beams-per-item", default=str(FUSED_BEAMS_PER_ITEM), help="Comma-separated; default: the shipped one.")
    ap.add_argument("--head-proposals", default=str(HEAD_PROPOSALS_PER_ITEM), help="Comma-separated; default: the shipped one.")
    args = ap.parse_args()

    served = open_store(args.store)
    decoder, trie = served.decoder, served.trie
    weight = args.weight if args.weight is not None else (decoder.spec.item_weight or 0.5)
    engine = TorchEngine(decoder, served.mask)  # one engine, so both weights share its caches
    per_item = [int(x) for x in args.beams_per_item.split(",")]
    proposals = [int(x) for x in args.head_proposals.split(",")]
    widest = max(args.beam, max(per_item) * args.k)
    retrievers = {"weight 0": Retriever(decoder, engine, beam_width=args.beam, max_beam_width=widest, item_weight=0.0)}
    retrievers |= {f"weight {weight:g}, {n} beams/item, {p} proposed": Retriever(
        decoder, engine, beam_width=args.beam, max_beam_width=widest, item_weight=weight, fused_beams_per_item=n, head_proposals_per_item=p)
        for n in per_item for p in proposals}
    cases = sample_cases(load_training_data(args.data).valid, args.requests, args.seed)
    for r in retrievers.values():  # warm-up: first calls build the mask and the item table
        r.retrieve(trie, [Query(cases[0].query, cases[0].history, k=args.k)])
    ms = {w: [] for w in retrievers}
    for c in cases:
        for w, r in retrievers.items():
            t = time.perf_counter()
            r.retrieve(trie, [Query(c.query, c.history, k=args.k)])
            ms[w].append(1e3 * (time.perf_counter() - t))
    print(f"decoder {decoder.version}, {len(cases)} requests, k={args.k}, beam {args.beam}")
    base = ms["weight 0"]
    for name, v in ms.items():
        print(f"{name:<40} p50 {np.percentile(v, 50):6.1f} ms   p99 {np.percentile(v, 99):6.1f} ms   mean {np.mean(v):6.1f} ms   "
              f"ratio to weight 0: p50 {np.percentile(v, 50) / np.percentile(base, 50):.2f}x, mean {np.mean(v) / np.mean(base):.2f}x")


if __name__ == "__main__":
    main()
