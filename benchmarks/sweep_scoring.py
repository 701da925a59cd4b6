"""Scoring choices on validation cases, for a trained decoder (no retraining): the length penalty,
scores renormalised over the trie's allowed children, and the order of items inside a SID.

Validation cases only (history ``item_ids[:-2]`` -> ``item_ids[-2]``, or the held-out training
queries), never test cases. Each variant decodes the same cases through the ``Retriever``:

- ``lp``: scores divided by ``(length + 1) ** lp`` (``TorchEngine(length_penalty=...)``); the
  other variants keep the decoder's own (``DecoderSpec.length_penalty``, chosen on its validation cases);
- ``renorm``: per step, log-softmax over the *allowed* SID tokens only instead of over the whole
  SID range (a variant of the torch engine defined here; adopted in the engines only if it wins);
- ``within``: ``similarity`` to the request or ``popularity`` inside a SID;
- ``history kept``: the request's own history items may be answered (``exclude_history=False``);
- ``beam``: wider beams than ``--beam`` (``--beams``), since the service gives a request for k
  items only k beams;
- ``prior``: each finished SID's score minus ``a * log p(SID)``, p being the SID's share of the
  training interactions (add-one smoothed), for ``a`` in ``--priors``: a popularity correction
  that may lift tail items, applied to the beams the search kept.

Each variant prints Recall@k over all cases and over head and tail targets (the index's own head
flags, the split ``sa2crq eval`` scores by).

    OMP_NUM_THREADS=1 python benchmarks/sweep_scoring.py --store eval-out/methods/sa2crq/store --data ../shared/data/games \
        [--cases 1000] [--k 10] [--beam 100] [--beams 150,200] [--priors 0.1,0.3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from indexer.training.examples import load_training_data
from indexer.training.validation import sample_cases
from model_store import Store
from sidcore.decoder.bundle import load_decoder
from sidcore.decoder.model import sid_logits
from sidcore.engines.beam import NEG
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index import Trie, TrieMask
from sidcore.index.artifact import IndexArtifact, load_index
from sidcore.retriever import Query, Retriever


class RenormalisedEngine(TorchEngine):
    """The torch engine with each step's log-probabilities normalised over the allowed tokens."""

    def log_probs(self, hidden, vocab, allowed, depth):
        logits = sid_logits(self.model, hidden, vocab.base, vocab.num_local).float().cpu()
        return torch.log_softmax(logits.masked_fill(~allowed, NEG), -1).nan_to_num_(nan=NEG)  # rows with nothing allowed stay -inf


class PriorCorrectedEngine:
    """An engine whose finished SIDs are re-scored by ``score - alpha * log_prior[node]`` and re-sorted."""

    def __init__(self, engine: TorchEngine, log_prior: np.ndarray, alpha: float):
        self.engine, self.log_prior, self.alpha = engine, log_prior, alpha  # log_prior: float [trie nodes]

    def decode(self, *args, **kwargs):
        hits, stats = self.engine.decode(*args, **kwargs)
        rescored = [[dataclasses.replace(h, score=h.score - self.alpha * self.log_prior[h.node]) if h.node >= 0 else h for h in row]
                    for row in hits]
        return [sorted(row, key=lambda h: -h.score) for row in rescored], stats


def sid_log_prior(trie: Trie, art: IndexArtifact) -> np.ndarray:
    """log p(SID) per trie node [num nodes]: the training interactions of its items, add-one smoothed."""
    weights = np.ones(len(trie.item_node))
    weights[trie.rows_of(art.item_ids.tolist())] = art.popularity + 1.0
    counts = np.bincount(trie.item_node, weights=weights, minlength=len(trie.parent))
    return np.log(np.maximum(counts, 1.0) / weights.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--beam", type=int, default=100)
    ap.add_argument("--penalties", default="0,0.5,1")
    ap.add_argument("--beams", default="", help="Wider beams to try with the defaults, e.g. 150,200.")
    ap.add_argument("--priors", default="", help="Popularity-correction weights to try, e.g. 0.1,0.3.")
    args = ap.parse_args()

    store = Store(args.store)
    decoder = load_decoder(store)
    art = load_index(store, decoder.spec.index_version)
    trie = Trie.from_artifact(art)
    mask = TrieMask(trie, decoder.spec.vocab)
    data = load_training_data(args.data)
    cases = sample_cases(data.valid, args.cases, seed=0)
    base = TorchEngine(decoder, mask)  # the decoder's own length penalty
    lp = f"lp {base.length_penalty:g}"
    variants = [(f"lp {p}", TorchEngine(decoder, mask, length_penalty=float(p)), "similarity", True, args.beam) for p in args.penalties.split(",")]
    variants += [(f"{lp}, beam {w}", base, "similarity", True, int(w)) for w in args.beams.split(",") if w]
    variants += [
        (f"{lp}, renorm", RenormalisedEngine(decoder, mask), "similarity", True, args.beam),
        (f"{lp}, popularity inside a SID", base, "popularity", True, args.beam),
        (f"{lp}, history kept", base, "similarity", False, args.beam),
    ]
    if args.priors:
        log_prior = sid_log_prior(trie, art)
        variants += [(f"{lp}, prior {a}", PriorCorrectedEngine(base, log_prior, float(a)), "similarity", True, args.beam)
                     for a in args.priors.split(",")]
    head = dict(zip(art.item_ids.tolist(), art.head.tolist()))
    is_head = np.array([bool(head.get(c.target, False)) for c in cases])
    print(f"decoder {decoder.version}, {len(cases)} validation cases ({int(is_head.sum())} head / {int((~is_head).sum())} tail), "
          f"beam {args.beam}, Recall@{args.k} all / head / tail")
    for name, engine, within, exclude, beam in variants:
        retriever = Retriever(decoder, engine, beam_width=beam, max_beam_width=beam, within=within)
        t, hit = time.perf_counter(), []
        for i in range(0, len(cases), 32):
            chunk = cases[i : i + 32]
            results, _ = retriever.retrieve(trie, [Query(c.query, c.history, k=args.k, exclude_history=exclude) for c in chunk])
            hit += [c.target in {h.item_id for h in r.items} for c, r in zip(chunk, results)]
        h = np.array(hit)
        tail = f"{h[~is_head].mean():.4f}" if (~is_head).any() else "-"
        print(f"{name:<32} {h.mean():.4f} / {h[is_head].mean():.4f} / {tail}   [{time.perf_counter() - t:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
