"""Does the item head find targets the beams miss? Validation Recall@10 of a re-ranked request with
the head's proposals (``Retriever(head_proposals_per_item=P)``) at each P and item weight W.

Each P decodes the validation cases once, as the service would answer a k = 10 request (its
beams, its length penalty), and ranks the candidates under every W; P = 0 is the shipped pipeline.
Validation cases only (history ``item_ids[:-2]`` -> ``item_ids[-2]``, the trainer's seeded sample):

    OMP_NUM_THREADS=1 python benchmarks/probe_head_proposals.py --store eval-games/methods/sa2crq/store \
        --data ../shared/data/games [--proposals 0,1,2,4] [--weights 0.25,0.5,1,2]
"""

from __future__ import annotations

import time

import numpy as np
from probe_args import open_store, probe_parser

from indexer.training.examples import load_training_data
from indexer.training.validation import sample_cases
from sidcore.engines.torch_engine import TorchEngine
from sidcore.retriever import Query, Retriever


def floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",")]


def main() -> None:
    ap = probe_parser(__doc__)
    ap.add_argument("--proposals", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2, 4])
    ap.add_argument("--weights", type=floats, default=None, help="Item weights W (default: the decoder's own, then 0.5x and 2x).")
    args = ap.parse_args()

    served = open_store(args.store)
    decoder, art, trie = served.decoder, served.art, served.trie
    own = decoder.spec.item_weight
    weights = args.weights or [own / 2, own, own * 2]
    head_of = dict(zip(art.item_ids.tolist(), art.head.tolist()))
    data = load_training_data(args.data)
    cases = sample_cases(data.valid, args.cases, args.seed)
    tail = np.array([not head_of.get(c.target, False) for c in cases])
    print(f"decoder {decoder.version} (own W {own:g}), {len(cases)} validation cases ({tail.sum()} tail), Recall@10 overall / head / tail")
    for p in args.proposals:
        r = Retriever(decoder, TorchEngine(decoder, served.mask), head_proposals_per_item=p, item_weight=own or 1.0)
        hits = np.zeros((len(cases), len(weights)), bool)
        t0 = time.perf_counter()
        for i in range(0, len(cases), 32):
            chunk = cases[i : i + 32]
            decoded = r.decode(trie, [Query(c.query, c.history, k=10) for c in chunk])
            for j, w in enumerate(weights):
                for n, (c, res) in enumerate(zip(chunk, r.rank(decoded, w))):
                    hits[i + n, j] = c.target in {h.item_id for h in res.items}
        took = (time.perf_counter() - t0) / len(cases) * 1000
        for j, w in enumerate(weights):
            print(f"proposals {p} x k, W {w:<5g} {hits[:, j].mean():.4f} / {hits[~tail, j].mean():.4f} / {hits[tail, j].mean():.4f}"
                  f"   ({took:.1f} ms a case)", flush=True)


if __name__ == "__main__":
    main()
