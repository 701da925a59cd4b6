"""Where a trained decoder loses: its SID beam search against its own next-item head.

A decoder trained with the next-item loss (``--item-loss``) can score every item directly: the
hidden state at a prompt's last ``<item>`` marker against each item as a history marker carries
it (``sidcore.decoder.model.item_outputs``), as SASRec ranks. If that head beats the beam search
on the same cases, the SID layout (codes, trie, beams) is what loses; if the beams win, the
hidden state itself is the limit. A diagnostic only: the service ranks by SID scores.

Validation cases only (history ``item_ids[:-2]`` -> ``item_ids[-2]``, the trainer's seeded sample):

    OMP_NUM_THREADS=1 python benchmarks/probe_item_head.py --store eval-games/methods/sa2crq/store --data ../shared/data/games
"""

from __future__ import annotations

import torch
from probe_args import probe_parser

from indexer.training.examples import load_training_data
from indexer.training.validation import sample_cases
from model_store import Store
from sidcore.decoder.bundle import load_decoder
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index import Trie, TrieMask
from sidcore.index.artifact import load_index
from sidcore.retriever import Query, Retriever


def main() -> None:
    ap = probe_parser(__doc__)
    ap.add_argument("--beam", type=int, default=20)
    args = ap.parse_args()

    store = Store(args.store)
    decoder = load_decoder(store)
    if decoder.inputs.empty:
        raise SystemExit("this decoder has no item content (--item-content none): it has no item head to probe")
    trie = Trie.from_artifact(load_index(store, decoder.spec.index_version))
    data = load_training_data(args.data)
    cases = sample_cases(data.valid, args.cases, args.seed)
    retriever = Retriever(decoder, TorchEngine(decoder, TrieMask(trie, decoder.spec.vocab)), beam_width=args.beam, max_beam_width=args.beam)
    hits = {"item head": 0, f"SID beams ({args.beam})": 0}
    with torch.inference_mode():
        items = decoder.item_outputs()  # [N, H]
        for i in range(0, len(cases), 64):
            chunk = cases[i : i + 64]
            queries = [Query(c.query, c.history, k=10) for c in chunk]
            embeds, attn = decoder.prefill([retriever.prompt(trie, q) for q in queries], decoder.query_vectors([c.query for c in chunk]))
            state = decoder.model.model(inputs_embeds=embeds, attention_mask=attn, position_ids=(attn.cumsum(1) - 1).clamp(min=0)).last_hidden_state[:, -1]
            scores = state @ items.T  # [R, N]
            for r, c in enumerate(chunk):  # history items left out, as the service does
                rows = decoder.items.rows(list(c.history))
                scores[r, rows[rows >= 0]] = -torch.inf
            top = scores.topk(10, -1).indices.tolist()
            hits["item head"] += sum(decoder.items.row[c.target] in set(t) for c, t in zip(chunk, top))
            results, _ = retriever.retrieve(trie, queries)
            hits[f"SID beams ({args.beam})"] += sum(c.target in {h.item_id for h in r.items} for c, r in zip(chunk, results))
    print(f"decoder {decoder.version}, {len(cases)} validation cases, Recall@10")
    for name, n in hits.items():
        print(f"{name:<20} {n / len(cases):.4f}")


if __name__ == "__main__":
    main()
