"""Build SA²CRQ (and optionally the other methods) on ../shared/data/games; print SID quality.

Popularity is counted on training interactions (the last item of each sequence is the test
item, so it is held out). Prints each method's quality report, wall time and peak memory, then
one comparison table.

    python benchmarks/bench_games.py [--data ../shared/data/games] [--methods sa2crq,rq-kmeans,...]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from indexer.build import BuildConfig, build_index
from indexer.data.catalog import count_popularity, load_items
from indexer.quantizers import QuantizerConfig
from indexer.report import print_report
from model_store import Store
from sidcore.embed import embed_texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "games")
    ap.add_argument("--methods", default="sa2crq")
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--store", type=Path, help="Keep the versions here (default: a temp dir).")
    args = ap.parse_args()

    t = time.perf_counter()
    catalog = load_items(args.data / "items.jsonl")
    catalog = catalog.with_popularity(count_popularity(catalog, args.data / "sequences.jsonl", holdout_last=1))
    vectors = embed_texts(catalog.texts)
    catalog = catalog.with_vectors(vectors)
    print(f"loaded and embedded {len(catalog):,} items in {time.perf_counter() - t:.1f} s")

    store = Store(args.store or tempfile.mkdtemp(prefix="bench-games-"))
    sizes = tuple(int(s) for s in args.sizes.split(","))
    rows = []
    for method in args.methods.split(","):
        cfg = BuildConfig(method=method, quantizer=QuantizerConfig(sizes=sizes, epochs=args.epochs))
        t = time.perf_counter()
        version, report = build_index(catalog, cfg, store)
        wall = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print_report(report, title=f"{method} on games ({version})")
        print(f"{method}: wall {wall:.1f} s, peak RSS so far {peak:,.0f} MiB")
        rows.append((method, report, wall))

    table = Table(title=f"games: {len(catalog):,} items, sizes {args.sizes}")
    for col in ("method", "#SID", "len head", "len tail", "items/SID mean", "p99", "max", "collision", "recon MSE", "wall s"):
        table.add_column(col, justify="right")
    for method, r, wall in rows:
        m, ips = r["mean_sid_length"], r["items_per_sid"]
        table.add_row(method, str(r["num_sids"]), f"{m['head']:.2f}", f"{m['tail']:.2f}", f"{ips['mean']:.2f}", f"{ips['p99']:.0f}",
                      str(ips["max"]), f"{r['collision_rate']:.3f}", f"{r['reconstruction_mse']:.4f}", f"{wall:.0f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
