"""Scoring choices on validation cases, for a trained decoder (no retraining): the length penalty,
scores renormalised over the trie's allowed children, and the order of items inside a SID.

Validation cases only (history ``item_ids[:-2]`` -> ``item_ids[-2]``, or the held-out training
queries), never test cases. Each variant decodes the same cases through the ``Retriever``:

- ``lp``: scores divided by ``(length + 1) ** lp`` (``TorchEngine(length_penalty=...)``);
- ``renorm``: per step, log-softmax over the *allowed* SID tokens only instead of over the whole
  SID range (a variant of the torch engine defined here; adopted in the engines only if it wins);
- ``within``: ``similarity`` to the request or ``popularity`` inside a SID;
- ``history kept``: the request's own history items may be answered (``exclude_history=False``);
- ``beam``: wider beams than ``--beam`` (``--beams``), since the service gives a request for k
  items only k beams.

    OMP_NUM_THREADS=1 python benchmarks/sweep_scoring.py --store eval-out/methods/sa2crq/store --data ../shared/data/games \
        [--cases 1000] [--k 10] [--beam 100] [--beams 150,200]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from indexer.training.examples import load_training_data
from indexer.training.validation import sample_cases
from model_store import Store
from sidcore.decoder.bundle import load_decoder
from sidcore.decoder.model import sid_logits
from sidcore.engines.beam import NEG
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index import Trie, TrieMask
from sidcore.index.artifact import load_index
from sidcore.retriever import Query, Retriever


class RenormalisedEngine(TorchEngine):
    """The torch engine with each step's log-probabilities normalised over the allowed tokens."""

    def log_probs(self, hidden, vocab, allowed):
        logits = sid_logits(self.model, hidden, vocab.base, vocab.num_local).float().cpu()
        return torch.log_softmax(logits.masked_fill(~allowed, NEG), -1).nan_to_num_(nan=NEG)  # rows with nothing allowed stay -inf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--beam", type=int, default=100)
    ap.add_argument("--penalties", default="0,0.5,1")
    ap.add_argument("--beams", default="", help="Wider beams to try with the defaults, e.g. 150,200.")
    args = ap.parse_args()

    store = Store(args.store)
    decoder = load_decoder(store)
    trie = Trie.from_artifact(load_index(store, decoder.spec.index_version))
    mask = TrieMask(trie, decoder.spec.vocab)
    data = load_training_data(args.data)
    cases = sample_cases(data.valid, args.cases, seed=0)
    base = TorchEngine(decoder, mask)
    variants = [(f"lp {lp}", TorchEngine(decoder, mask, length_penalty=float(lp)), "similarity", True, args.beam) for lp in args.penalties.split(",")]
    variants += [(f"lp 0, beam {w}", base, "similarity", True, int(w)) for w in args.beams.split(",") if w]
    variants += [
        ("renorm", RenormalisedEngine(decoder, mask), "similarity", True, args.beam),
        ("lp 0, popularity inside a SID", base, "popularity", True, args.beam),
        ("lp 0, history kept", base, "similarity", False, args.beam),
    ]
    print(f"decoder {decoder.version}, {len(cases)} validation cases, beam {args.beam}, Recall@{args.k}")
    for name, engine, within, exclude, beam in variants:
        retriever = Retriever(decoder, engine, beam_width=beam, max_beam_width=beam, within=within)
        t, hits = time.perf_counter(), 0
        for i in range(0, len(cases), 32):
            chunk = cases[i : i + 32]
            results, _ = retriever.retrieve(trie, [Query(c.query, c.history, k=args.k, exclude_history=exclude) for c in chunk])
            hits += sum(c.target in {h.item_id for h in r.items} for c, r in zip(chunk, results))
        print(f"{name:<32} {hits / len(cases):.4f}   [{time.perf_counter() - t:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
