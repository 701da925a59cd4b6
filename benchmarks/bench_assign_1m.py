"""SID assignment throughput on a synthetic catalog with given vectors (default 1M items).

Fits SA²CRQ on a seeded sample (``--train-sample``), then times what a re-index or a bulk
cold-start load does for every item: encode (frozen encoder + residual codebooks), SARQ
truncation and SID grouping. Goal: 1M items in <= 60 s on 2 cores.

    python benchmarks/bench_assign_1m.py [--items 1000000] [--dim 64]
"""

from __future__ import annotations

import argparse
import resource
import time

from indexer.data.synthetic import SyntheticConfig, generate
from indexer.quantizers import REGISTRY, QuantizerConfig
from indexer.sarq import SARQConfig
from indexer.split import head_mask
from sidcore.sid import SIDTable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--train-sample", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()

    t = time.perf_counter()
    synth = generate(SyntheticConfig(num_items=args.items, dim=args.dim, seed=0))
    cat = synth.catalog
    head = head_mask(cat.popularity)
    print(f"generated {args.items:,} items (dim {args.dim}, {head.sum():,} head) in {time.perf_counter() - t:.1f} s")

    sizes = tuple(int(s) for s in args.sizes.split(","))
    cfg = QuantizerConfig(sizes=sizes, epochs=args.epochs, train_sample=args.train_sample, batch_size=1024)
    t = time.perf_counter()
    q = REGISTRY["acrq"](cfg, SARQConfig()).fit(cat.vectors, head, progress=True)
    fit_s = time.perf_counter() - t
    print(f"fit SA²CRQ on a {args.train_sample:,}-item sample: {fit_s:.1f} s")

    t0 = time.perf_counter()
    codes = q.encode(cat.vectors, head=head)
    q.count_catalog(codes)
    t1 = time.perf_counter()
    lengths = q.lengths(codes)
    t2 = time.perf_counter()
    table = SIDTable.build(codes, lengths, q.sizes, cat.popularity)
    t3 = time.perf_counter()
    total = t3 - t0
    print(f"encode {t1 - t0:.2f} s | SARQ truncation {t2 - t1:.2f} s | SID grouping {t3 - t2:.2f} s")
    print(f"SID assignment: {args.items:,} items in {total:.2f} s = {args.items / total:,.0f} items/s (goal: 1M in <= 60 s)")
    print(f"{table.num_sids:,} SIDs, mean length head {lengths[head].mean():.2f} / tail {lengths[~head].mean():.2f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
