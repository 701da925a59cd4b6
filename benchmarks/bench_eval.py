"""The comparison of issue 6 on public data: every method and baseline, printed as tables.

- games (``../shared/data/games``): leave-one-out on histories, history ``item_ids[:-1]`` -> the
  last item, on a seeded sample of ``--eval-users`` users;
- scifact (``../shared/data/scifact``): the training claims split by claim into train and
  held-out (``--heldout`` share, seeded), written as a BEIR folder with ``qrels/train.tsv`` and
  ``qrels/test.tsv`` under ``--out``; the decoder trains on the first, the cases are the second.

Each data set runs ``indexer.evaluation.run_all`` (what ``sa2crq eval`` runs) into
``OUT/<dataset>/``; a re-run reuses finished methods and baselines.

    OMP_NUM_THREADS=1 python benchmarks/bench_eval.py [--datasets games,scifact] [--out /tmp/bench-eval]

The defaults fit a shared 2-core CPU (about an hour per data set there). ``OMP_NUM_THREADS=1``:
with other jobs on the two cores, torch's two threads waiting on each other ran decoder steps
several times slower than one thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from indexer.data.splits import split_queries
from indexer.evaluation.baselines import SASRecConfig
from indexer.evaluation.cases import load_eval_data
from indexer.evaluation.config import EvalConfig
from indexer.evaluation.report import markdown
from indexer.evaluation.runner import run_all
from indexer.quantizers import QuantizerConfig
from indexer.training.config import TrainConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="games,scifact")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-eval"))
    ap.add_argument("--methods", default="rq-kmeans,rq-vae,acrq,sarq,sa2crq")
    ap.add_argument("--baselines", default="popularity,bm25,dense,sasrec")
    ap.add_argument("--ks", default="1,5,10,20,100")
    ap.add_argument("--epochs", type=int, default=20, help="quantizer epochs (per ACRQ stage)")
    ap.add_argument("--games-sizes", default="256,512,1024")
    ap.add_argument("--decoder-epochs", type=int, default=TrainConfig().epochs, help="decoder epochs at most")
    ap.add_argument("--eval-users", type=int, default=300, help="games users scored")
    ap.add_argument("--scifact-sizes", default="64,128,256")
    ap.add_argument("--heldout", type=float, default=0.2, help="share of scifact training claims held out")
    ap.add_argument("--sasrec-epochs", type=int, default=5)
    ap.add_argument("--hallucination-cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    sizes = {"games": args.games_sizes, "scifact": args.scifact_sizes}
    for name in args.datasets.split(","):
        out = args.out / name
        if name == "scifact":
            data_dir = split_queries(SHARED / "scifact", args.out / "scifact-split", args.heldout, args.seed)
        else:
            data_dir = SHARED / name
        cfg = EvalConfig(
            methods=tuple(m for m in args.methods.split(",") if m),
            baselines=tuple(b for b in args.baselines.split(",") if b),
            ks=tuple(int(k) for k in args.ks.split(",")),
            quantizer=QuantizerConfig(sizes=tuple(int(s) for s in sizes[name].split(",")), epochs=args.epochs, seed=args.seed),
            train=TrainConfig(epochs=args.decoder_epochs, seed=args.seed),
            sasrec=SASRecConfig(epochs=args.sasrec_epochs),
            max_cases=args.eval_users if name == "games" else None,
            hallucination_cases=args.hallucination_cases,
            seed=args.seed,
        )
        t = time.perf_counter()
        data = load_eval_data(data_dir, split=cfg.split)
        report = run_all(data, cfg, out, log=lambda m: print(f"[{name} {time.perf_counter() - t:6.0f} s] {m}", flush=True))
        print(f"\n=== {name}: {time.perf_counter() - t:.0f} s; {out / 'report.md'} ===\n")
        print(markdown(report), flush=True)
        print(json.dumps({m: r.get("timing_s") for m, r in report["methods"].items()}), flush=True)


if __name__ == "__main__":
    main()
