"""SARQ's ``max_group`` on a real catalog: SIDs, collision rate and SID lengths per bound, from
index builds alone (no decoder). The catalog and head/tail split are those `sa2crq eval` uses.

    OMP_NUM_THREADS=1 python benchmarks/sweep_max_group.py --data ../shared/data/games --method sa2crq --groups none,1,2,4
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from indexer.build import build_index
from indexer.evaluation.cases import load_eval_data
from indexer.evaluation.config import EvalConfig
from indexer.sarq import SARQConfig
from model_store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--method", default="sa2crq")
    ap.add_argument("--groups", default="none,1,2,4", help="max_group values; 'none' for no bound.")
    args = ap.parse_args()

    data = load_eval_data(args.data)
    print(f"{args.method} on {args.data.name}: {len(data.catalog)} items")
    print(f"{'max_group':>9} {'SIDs':>7} {'collision':>9} {'length head':>11} {'length tail':>11} {'max items/SID':>13}")
    for g in args.groups.split(","):
        bound = None if g == "none" else int(g)
        cfg = EvalConfig(methods=(args.method,), baselines=(), sarq=SARQConfig(max_group=bound)).runs()[0][1]
        if not data.train_sequences:
            cfg = dataclasses.replace(cfg, collab_weight=0.0)  # as `sa2crq eval` does without histories
        with tempfile.TemporaryDirectory() as d:
            _, rep = build_index(data.catalog, cfg, Store(Path(d)), progress=False, sequences=data.train_sequences)
        length = rep["mean_sid_length"]
        print(f"{g:>9} {rep['num_sids']:>7} {rep['collision_rate']:>9.3f} {length['head']:>11.2f} {length['tail']:>11.2f} "
              f"{rep['items_per_sid']['max']:>13}", flush=True)


if __name__ == "__main__":
    main()
