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
- ``prior``: each SID's score minus ``a * log p(SID)``, p being the SID's share of the training
  interactions (add-one smoothed), for ``a`` in ``--priors``: a popularity correction that may
  lift tail items, applied to the SIDs the search kept and the item head proposed.

Each variant prints Recall@k over all cases and over head and tail targets (the index's own head
flags, the split ``sa2crq eval`` scores by).

    OMP_NUM_THREADS=1 python benchmarks/sweep_scoring.py --store eval-out/methods/sa2crq/store --data ../shared/data/games \
        [--cases 1000] [--seed 0] [--k 10] [--beam 100] [--beams 150,200] [--priors 0.1,0.3]
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from probe_args import head_flags, open_store, probe_parser

from indexer.training.examples import load_training_data
from indexer.training.validation import sample_cases
from sidcore.decoder.model import sid_logits
from sidcore.engines.beam import NEG
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index import Trie
from sidcore.index.artifact import IndexArtifact
from sidcore.retriever import Query, Retriever


@dataclasses.dataclass(frozen=True)
class Variant:
    """One scoring choice: its engine and beams, the order inside a SID, whether the request's
    history is left out, and the popularity correction's weight (0: none)."""

    name: str
    engine: TorchEngine
    beam: int
    within: str = "similarity"
    exclude_history: bool = True
    prior: float = 0.0


class RenormalisedEngine(TorchEngine):
    """The torch engine with each step's log-probabilities normalised over the allowed tokens."""

    def log_probs(self, hidden, vocab, allowed, depth):
        logits = sid_logits(self.model, hidden, vocab.base, vocab.num_local).float().cpu()
        return torch.log_softmax(logits.masked_fill(~allowed, NEG), -1).nan_to_num_(nan=NEG)  # rows with nothing allowed stay -inf


class PriorCorrectedRetriever(Retriever):
    """The service's retriever with every SID's score, the beams' and the head proposals' alike,
    lowered by ``alpha * log_prior[node]`` (``log_prior``: float [trie nodes]) before its items are ranked."""

    def __init__(self, *args, log_prior: np.ndarray, alpha: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_prior, self.alpha = log_prior, alpha

    def items(self, hits, trie, *args, **kwargs):
        hits = [dataclasses.replace(h, score=h.score - self.alpha * self.log_prior[h.node]) if h.node >= 0 else h for h in hits]
        return super().items(sorted(hits, key=lambda h: -h.score), trie, *args, **kwargs)


def sid_log_prior(trie: Trie, art: IndexArtifact) -> np.ndarray:
    """log p(SID) per trie node [num nodes]: the training interactions of its items, add-one smoothed."""
    weights = np.ones(len(trie.item_node))
    weights[trie.rows_of(art.item_ids.tolist())] = art.popularity + 1.0
    counts = np.bincount(trie.item_node, weights=weights, minlength=len(trie.parent))
    return np.log(np.maximum(counts, 1.0) / weights.sum())


def main() -> None:
    ap = probe_parser(__doc__, cases=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--beam", type=int, default=100)
    ap.add_argument("--penalties", default="0,0.5,1")
    ap.add_argument("--beams", default="", help="Wider beams to try with the defaults, e.g. 150,200.")
    ap.add_argument("--priors", default="", help="Popularity-correction weights to try, e.g. 0.1,0.3.")
    args = ap.parse_args()

    served = open_store(args.store)
    decoder, art, trie, mask = served.decoder, served.art, served.trie, served.mask
    cases = sample_cases(load_training_data(args.data).valid, args.cases, args.seed)
    base = TorchEngine(decoder, mask)  # the decoder's own length penalty
    lp = f"lp {base.length_penalty:g}"
    variants = [Variant(f"lp {p}", TorchEngine(decoder, mask, length_penalty=float(p)), args.beam) for p in args.penalties.split(",")]
    variants += [Variant(f"{lp}, beam {w}", base, int(w)) for w in args.beams.split(",") if w]
    variants += [
        Variant(f"{lp}, renorm", RenormalisedEngine(decoder, mask), args.beam),
        Variant(f"{lp}, popularity inside a SID", base, args.beam, within="popularity"),
        Variant(f"{lp}, history kept", base, args.beam, exclude_history=False),
    ]
    variants += [Variant(f"{lp}, prior {a}", base, args.beam, prior=float(a)) for a in args.priors.split(",") if a]
    log_prior = sid_log_prior(trie, art) if args.priors else None
    is_head = head_flags(art, [c.target for c in cases])
    print(f"decoder {decoder.version}, {len(cases)} validation cases ({int(is_head.sum())} head / {int((~is_head).sum())} tail), "
          f"beam {args.beam}, Recall@{args.k} all / head / tail")
    for v in variants:
        kwargs = dict(beam_width=v.beam, max_beam_width=v.beam, within=v.within)
        retriever = (PriorCorrectedRetriever(decoder, v.engine, log_prior=log_prior, alpha=v.prior, **kwargs) if v.prior
                     else Retriever(decoder, v.engine, **kwargs))
        t, hit = time.perf_counter(), []
        for i in range(0, len(cases), 32):
            chunk = cases[i : i + 32]
            results, _ = retriever.retrieve(trie, [Query(c.query, c.history, k=args.k, exclude_history=v.exclude_history) for c in chunk])
            hit += [c.target in {h.item_id for h in r.items} for c, r in zip(chunk, results)]
        h = np.array(hit)
        tail = f"{h[~is_head].mean():.4f}" if (~is_head).any() else "-"
        print(f"{v.name:<32} {h.mean():.4f} / {h[is_head].mean():.4f} / {tail}   [{time.perf_counter() - t:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
