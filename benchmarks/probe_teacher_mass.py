"""Where the item-level rules teacher's mass lies (``--rules-teacher-items``), to size the extra
items its softmax takes (``RULES_TEACHER_TOP``).

For a seeded sample of training sequences (the decoder's own, so no validation or test item), each
position that predicts a next item gets the teacher's scores as in training (the row's own later
pairs taken out). Printed per top-k: the mean share of the teacher's mass on its k best items, and
how often the item that did come next is among them; beside them what a uniform draw of the item
term's 2,048 items holds in expectation.

    OMP_NUM_THREADS=1 python benchmarks/probe_teacher_mass.py --data ../shared/data/games
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from indexer.evaluation.cases import load_eval_data
from indexer.training.config import TrainConfig
from indexer.training.teacher import RulesTeacher

TOPS = (8, 32, 128, 512)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=2000, help="Training sequences sampled.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    data = load_eval_data(args.data)
    row = data.catalog.index_of
    n = len(data.catalog)
    sequences = [np.array([row[i] for i in s], dtype=np.int64) for s in data.train_sequences if len(s) >= 2]
    teacher = RulesTeacher(sequences, n)
    h = TrainConfig().prompt.history_items
    rng = np.random.default_rng(args.seed)
    picked = [sequences[i][-(h + 1):] for i in rng.choice(len(sequences), min(args.rows, len(sequences)), replace=False)]
    width = max(len(s) for s in picked)
    content = np.full((len(picked), width), -1, dtype=np.int64)
    first = np.zeros((len(picked), width), dtype=bool)
    for b, s in enumerate(picked):
        content[b, : len(s)] = s
        first[b, : len(s) - 1] = True  # each item's position predicts the next one
    nxt = np.concatenate([s[1:] for s in picked])
    scores = teacher.item_scores(content, first, own_future=True)
    mass, hit = {k: [] for k in TOPS}, {k: [] for k in TOPS}
    scored = 0
    for p, r in enumerate(scores):
        total = r.data.sum()
        if total <= 0:
            continue
        scored += 1
        order = np.argsort(-r.data)
        for k in TOPS:
            mass[k].append(r.data[order[:k]].sum() / total)
            hit[k].append(nxt[p] in r.indices[order[:k]])
    print(f"{scored} of {scores.shape[0]} positions have a teacher distribution; a uniform draw of 2,048 of {n} items holds "
          f"{2048 / n:.3f} of it in expectation")
    print("| teacher's best k | share of its mass | the next item among them |\n|---|---|---|")
    for k in TOPS:
        print(f"| {k} | {np.mean(mass[k]):.3f} | {np.mean(hit[k]):.3f} |")


if __name__ == "__main__":
    main()
