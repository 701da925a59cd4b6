"""Where a trained decoder loses: its SID beam search against its own next-item head, and the two
together.

A decoder trained with the next-item loss (``--item-loss``) can score every item directly: the
hidden state at a prompt's last ``<item>`` marker against each item as a history marker carries
it (``sidcore.decoder.model.item_outputs``), as SASRec ranks. If that head beats the beam search
on the same cases, the SID layout (codes, trie, beams) is what loses; if the beams win, the
hidden state itself is the limit. ``--fuse W,...`` also ranks the beams' items by their SID score
plus W times the head's log-probability of the item (a product of the two experts; W = 0 is the
beams' own order).

Validation cases only (history ``item_ids[:-2]`` -> ``item_ids[-2]``, the trainer's seeded sample):

    OMP_NUM_THREADS=1 python benchmarks/probe_item_head.py --store eval-games/methods/sa2crq/store --data ../shared/data/games \
        [--beam 100] [--fuse 0.25,0.5,1]
"""

from __future__ import annotations

import numpy as np
import torch
from probe_args import open_store, probe_parser

from indexer.training.examples import load_training_data
from indexer.training.validation import sample_cases
from sidcore.retriever import Query


def main() -> None:
    ap = probe_parser(__doc__)
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--fuse", type=lambda s: [float(x) for x in s.split(",")], default=[],
                    help="Weights W of the head's log-probability added to the beams' SID scores.")
    args = ap.parse_args()

    served = open_store(args.store)
    decoder, art, trie = served.decoder, served.art, served.trie
    if decoder.inputs.empty:
        raise SystemExit("this decoder has no item content (--item-content none): it has no item head to probe")
    head_of = dict(zip(art.item_ids.tolist(), art.head.tolist()))
    data = load_training_data(args.data)
    cases = sample_cases(data.valid, args.cases, args.seed)
    # item_weight 0: the beams' own SID order, whatever weight the decoder chose to be served at.
    retriever = served.retriever(args.beam, item_weight=0)
    names = ["item head", f"SID beams ({args.beam})"] + [f"fused W={w:g}" for w in args.fuse]
    hits = np.zeros((len(cases), len(names)), bool)
    with torch.inference_mode():
        items = decoder.item_outputs()  # [N, H]
        for i in range(0, len(cases), 64):
            chunk = cases[i : i + 64]
            queries = [Query(c.query, c.history, k=args.beam) for c in chunk]
            state = decoder.item_states([retriever.prompt(trie, q) for q in queries], decoder.query_vectors([c.query for c in chunk]))  # [R, H]
            scores = state @ items.T  # [R, N]
            for r, c in enumerate(chunk):  # history items left out, as the service does
                rows = decoder.items.rows(list(c.history))
                scores[r, rows[rows >= 0]] = -torch.inf
            logp = torch.log_softmax(scores.float(), -1).numpy()
            top = scores.topk(10, -1).indices.tolist()
            results, _ = retriever.retrieve(trie, queries)
            for r, (c, res) in enumerate(zip(chunk, results)):
                n = i + r
                hits[n, 0] = decoder.items.row[c.target] in set(top[r])
                ids = [h.item_id for h in res.items]
                hits[n, 1] = c.target in ids[:10]
                sid_score = np.array([h.score for h in res.items])
                head_lp = logp[r, decoder.items.rows(ids)] if ids else np.zeros(0)
                for j, w in enumerate(args.fuse):
                    order = np.argsort(-(sid_score + w * head_lp), kind="stable")[:10]
                    hits[n, 2 + j] = c.target in {ids[o] for o in order}
            print(f"{i + len(chunk)}/{len(cases)} cases", flush=True)
    tail = np.array([not head_of.get(c.target, False) for c in cases])
    print(f"decoder {decoder.version}, {len(cases)} validation cases ({tail.sum()} tail), Recall@10 overall / head / tail")
    for j, name in enumerate(names):
        print(f"{name:<20} {hits[:, j].mean():.4f} / {hits[~tail, j].mean():.4f} / {hits[tail, j].mean():.4f}")


if __name__ == "__main__":
    main()
