"""What embedding a request's query costs: MiniLM per request next to the whole retrieval.

The decoder's soft prompt and the within-SID order need the query's MiniLM embedding, which the
service computes at request time (``sidcore.embed.embed_queries``: no disk cache, a bounded
in-process one). For ``--requests`` distinct queries, one request at a time, this times the
embedding alone and the full ``Retriever.retrieve`` (embedding + decode + items) on a store's
active decoder, interleaved so both see the same machine noise.

    OMP_NUM_THREADS=1 python benchmarks/bench_query_embedding.py --store demo/store --data demo/data [--requests 200]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from probe_args import open_store

from indexer.data.catalog import load_items
from sidcore import embed
from sidcore.retriever import Query


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="The data folder the store was built from (query texts are item titles).")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--beam", type=int, default=20)
    args = ap.parse_args()

    served = open_store(args.store)
    decoder, trie = served.decoder, served.trie
    retriever = served.retriever(args.beam)
    catalog = load_items(next(p for p in (args.data / "items.jsonl", args.data / "corpus.jsonl") if p.is_file()))
    rng = np.random.default_rng(0)
    # Queries a user might type: a few words of an item's text, each one distinct (no cache hits).
    texts = [" ".join(catalog.texts[i].split()[:6]) + f" {n}" for n, i in enumerate(rng.permutation(len(catalog))[: args.requests])]
    retriever.retrieve(trie, [Query(texts[0], k=10)])  # load MiniLM and warm up outside the timings
    embed_ms, total_ms = [], []
    for n, text in enumerate(texts):
        t = time.perf_counter()
        embed.embed_queries([f"{text} e"])
        embed_ms.append(1e3 * (time.perf_counter() - t))
        t = time.perf_counter()
        retriever.retrieve(trie, [Query(text, k=10)])
        total_ms.append(1e3 * (time.perf_counter() - t))
    e, r = np.asarray(embed_ms), np.asarray(total_ms)
    print(f"decoder {decoder.version} (soft vectors {decoder.spec.prompt.soft_vectors}), beam {args.beam}, {args.requests} distinct queries, one at a time")
    print(f"{'':<22}{'p50 ms':>8}{'p99 ms':>8}")
    print(f"{'MiniLM query embedding':<22}{np.percentile(e, 50):>8.1f}{np.percentile(e, 99):>8.1f}")
    print(f"{'whole retrieve':<22}{np.percentile(r, 50):>8.1f}{np.percentile(r, 99):>8.1f}")
    print(f"embedding share of a request (p50): {np.percentile(e, 50) / np.percentile(r, 50):.0%}")


if __name__ == "__main__":
    main()
