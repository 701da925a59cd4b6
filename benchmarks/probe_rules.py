"""What the sequential-rules baseline's lead is made of: its validation Recall@10 with one setting
switched at a time, from the strict "what came next after the newest item" to the fitted rule.

Each row fixes the rule (``RulesConfig`` with one value per grid, so nothing is searched) and
scores the same validation cases as the eval (history ``item_ids[:-2]`` -> ``item_ids[-2]``, a
seeded sample; never a test case). ``window`` 1 counts only the item right after, 50 any later
item of the sequence; ``reverse`` adds the pairs the other way round; ``last`` newest items vote.

    OMP_NUM_THREADS=2 python benchmarks/probe_rules.py --data ../shared/data/games
"""

from __future__ import annotations

import argparse
from pathlib import Path

from indexer.evaluation.baselines import Rules, RulesConfig
from indexer.evaluation.cases import load_eval_data

# (window, reverse, last); decay 1, recency 0.6 and beta 0.5 as the games fit chose
SETTINGS = [(1, 0.0, 1), (1, 0.0, 5), (50, 0.0, 5), (1, 0.3, 5), (50, 0.3, 1), (50, 0.3, 5)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cases", type=int, default=2000, help="Validation cases (the eval's default).")
    args = ap.parse_args()

    data = load_eval_data(args.data)
    print("| window | reverse | newest items voting | validation Recall@10 |\n|---|---|---|---|")
    for window, reverse, last in SETTINGS:
        rules = Rules(progress=False, rules=RulesConfig(window=(window,), decay=(1.0,), reverse=(reverse,), last=(last,), recency=(0.6,),
                                                       beta=(0.5,), val_cases=args.cases))
        rules.rank(data, 10)
        print(f"| {window} | {reverse} | {last} | {rules.fitted['val_recall10']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
