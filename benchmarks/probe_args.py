"""What every validation probe shares: its arguments (a trained store, its data, which validation
cases) and the store opened as the service would serve it."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.evaluation.metrics import mrr_at
from indexer.training.examples import Example
from indexer.training.validation import first_best
from model_store import Store
from sidcore.decoder.bundle import Decoder, load_decoder
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index import Trie, TrieMask
from sidcore.index.artifact import IndexArtifact, load_index
from sidcore.retriever import Query, Retriever


def probe_parser(doc: str, cases: int = 2000) -> argparse.ArgumentParser:
    """A parser with ``--store``, ``--data``, ``--cases`` (``cases`` by default) and ``--seed``
    (the decoder's, which drew its validation sample); a probe adds its own arguments."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cases", type=int, default=cases)
    ap.add_argument("--seed", type=int, default=0, help="The decoder's training seed: its validation sample.")
    return ap


def head_flags(art: IndexArtifact, targets: Sequence[str]) -> np.ndarray:
    """Bool [len(targets)]: each target's head flag in ``art``, the split ``sa2crq eval`` scores by
    (False for an item the index lacks)."""
    head = dict(zip(art.item_ids.tolist(), art.head.tolist()))
    return np.array([bool(head.get(t, False)) for t in targets], dtype=bool)


@dataclass(frozen=True)
class Served:
    """A store's active decoder, the index it was trained for, and that index's trie and mask."""

    decoder: Decoder
    art: IndexArtifact
    trie: Trie
    mask: TrieMask

    def retriever(self, beam: int, **kwargs) -> Retriever:
        """The service's pipeline with the torch engine, ``beam`` beams at most; ``kwargs`` go to
        ``Retriever`` (e.g. ``item_weight=0`` for the SID scores' own order)."""
        return Retriever(self.decoder, TorchEngine(self.decoder, self.mask), beam_width=beam, max_beam_width=beam, **kwargs)


def open_store(path: Path) -> Served:
    """The store at ``path`` as the service would serve it (see ``Served``)."""
    store = Store(path)
    decoder = load_decoder(store)
    art = load_index(store, decoder.spec.index_version)
    trie = Trie.from_artifact(art)
    return Served(decoder, art, trie, TrieMask(trie, decoder.spec.vocab))


def hits_by_weight(retriever: Retriever, trie: Trie, cases: Sequence[Example], k: int, batch: int,
                   weights: Sequence[float], at: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(hit bool [C, W], reciprocal rank float [C, W]) of each case's target in the top ``at``
    (default ``k``) of a ``k``-item answer at each item weight, the weights sharing one decode per
    ``batch`` cases (``Retriever.rank``), as the trainer's ``Validation`` scores them: the weights
    must plan the same beams (all positive, or 0 alone)."""
    at = at or k
    hit, rr = np.zeros((len(cases), len(weights)), bool), np.zeros((len(cases), len(weights)))
    for i in range(0, len(cases), batch):
        chunk = cases[i : i + batch]
        decoded = retriever.decode(trie, [Query(c.query, c.history, k=k) for c in chunk])
        for j, w in enumerate(weights):
            for n, (c, res) in enumerate(zip(chunk, retriever.rank(decoded, w))):
                ranked = [h.item_id for h in res.items][:at]
                hit[i + n, j], rr[i + n, j] = c.target in ranked, mrr_at(ranked, {c.target}, at)
    return hit, rr


def best_pair(pairs: Sequence[tuple], hit: dict, rr: dict, on: np.ndarray) -> tuple:
    """The trainer's rule on the cases ``on`` (bool [C]) among ``pairs`` (keys of ``hit`` and ``rr``,
    bool / float [C] each): the best Recall@10, then MRR@10, then the first."""
    return first_best(list(pairs), {p: (hit[p][on].mean(), rr[p][on].mean()) for p in pairs})


def two_fold(rule: Callable[..., tuple], pairs: Sequence[tuple], hit: dict, rr: dict) -> tuple[np.ndarray, list[tuple]]:
    """Choosing among more candidates on the same cases flatters the larger choice, so each half of
    the cases (even and odd positions) is scored at the pair ``rule(pairs, hit, rr, on)`` chose on
    the other half: (hit bool [C] at the other half's choice, [the choice scoring the even half, the odd one])."""
    size = len(next(iter(hit.values())))
    fold = np.arange(size) % 2 == 0
    got, picks = np.zeros(size, bool), []
    for held in (fold, ~fold):
        pick = rule(pairs, hit, rr, ~held)
        got[held], picks = hit[pick][held], picks + [pick]
    return got, picks


def head_tail(h: np.ndarray, is_head: np.ndarray) -> str:
    """Recall of hits ``h`` (bool [C]) on the head and tail cases, and the tail hits."""
    return f"{h[is_head].mean():.4f} / {h[~is_head].mean():.4f} ({int(h[~is_head].sum())} tail users)"
