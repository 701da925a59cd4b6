"""How well a history's last item tells the next item's first code, per kind of item vector: a
cheap screen for ``--collab-views`` before a decoder is trained on an index.

Each row clusters the catalog's item vectors (MiniLM text, with collaborative views appended as the
index build does) into 512 first codes (faiss k-means, the games catalog's first codebook size),
counts code-to-code steps in the training sequences (``item_ids[:-2]``), and scores every
validation item (``item_ids[-2]``, never a test item): is its code among the 10 codes that most
often followed the code of the history's last item? Perplexity of the code sizes guards against
a row winning by lumping items into a few codes. ``--reaches`` adds rows of all three views with
the directed pairs' other reaches (the index uses ``AFTER_WINDOW``).

    OMP_NUM_THREADS=2 python benchmarks/probe_collab_views.py --data ../shared/data/games --reaches 1,2,3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import faiss
import numpy as np

from indexer.collab import AFTER_WINDOW, collaborative_vectors
from indexer.data.catalog import load_sequences
from indexer.evaluation.cases import load_eval_data
from sidcore.embed import embed_texts

ALL = ("together", "after", "before")
ROWS = [(), ("together",), ("after",), ("together", "after"), ALL]


def first_codes(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """int [N] nearest of k k-means centroids per row of float32 [N, D] vectors."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, verbose=False)
    km.train(x)
    return km.index.search(x, 1)[1].ravel()


def next_code_recall(code: np.ndarray, train: list[np.ndarray], targets: np.ndarray, k: int, top: int = 10) -> float:
    """Share of targets whose code is among the ``top`` codes that most often followed the code of
    their history's last item. code: int [N items]; train: item rows per sequence; targets: int [U]."""
    steps = np.zeros((k, k))
    for s in train:
        if len(s) > 1:
            np.add.at(steps, (code[s[:-1]], code[s[1:]]), 1)
    last = np.array([s[-1] for s in train])
    best = np.argsort(-steps[code[last]], axis=1)[:, :top]
    return float((best == code[targets][:, None]).any(1).mean())


def reaches(text: str) -> list[int]:
    """Comma-separated positive reaches of ``--reaches``."""
    parts = [r.strip() for r in text.split(",") if r.strip()]
    if not all(r.isdecimal() and int(r) >= 1 for r in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return [int(r) for r in parts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--codes", type=int, default=512, help="First-codebook size.")
    ap.add_argument("--reaches", type=reaches, default=[], help="Comma-separated reaches of the directed views for extra rows of all three views.")
    args = ap.parse_args()

    data = load_eval_data(args.data)
    row = {item: i for i, item in enumerate(data.catalog.item_ids)}
    full = [s for s in load_sequences(args.data / "sequences.jsonl") if len(s) > 2 and s[-2] in row]
    train = [np.array([row[i] for i in s[:-2] if i in row]) for s in full]
    keep = [i for i, s in enumerate(train) if len(s)]
    train, targets = [train[i] for i in keep], np.array([row[full[i][-2]] for i in keep])
    text = embed_texts(data.catalog.texts, progress=False)
    print("| appended views | code-size perplexity | next first code in the top 10 |\n|---|---|---|")
    blocks = {}  # reach -> {view: its 64-wide block}: a view's block is the same alone or among others
    for views, reach in [(v, AFTER_WINDOW) for v in ROWS] + [(ALL, r) for r in args.reaches if r != AFTER_WINDOW]:
        if reach not in blocks:
            full = collaborative_vectors(data.catalog.item_ids, data.train_sequences, 64, 0, ALL, reach)[0]
            blocks[reach] = dict(zip(ALL, np.split(full, len(ALL), axis=1)))
        code = first_codes(np.concatenate([text, *(blocks[reach][v] for v in views)], 1), args.codes)
        p = np.bincount(code, minlength=args.codes) / len(code)
        perplexity = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
        name = (" + ".join(views) or "none (text alone)") + (f", reach {reach}" if reach != AFTER_WINDOW else "")
        print(f"| {name} | {perplexity:.0f} | {next_code_recall(code, train, targets, args.codes):.3f} |", flush=True)


if __name__ == "__main__":
    main()
