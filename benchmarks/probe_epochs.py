"""Which epoch to serve: chosen by the SID beams alone (the trainer's rule: the epoch's beams-only
Recall@10, then the item weight W on the chosen epoch) or by the answer the service returns (SID
score + W x item-head logit; the epoch and W chosen together). Needs every epoch's weights of one
training run, ``select-<epoch>.pt`` files holding ``{"model": ..., "inputs": ...}`` state dicts:
the trainer keeps only the last epoch's, so ``keep_epochs.py`` copies each one aside during the run.

Each epoch is scored on the validation cases as the trainer's ``Validation`` scores them (20
beams, the item head's proposals, the store decoder's length penalty), at every W of ``--weights``.
Since choosing among more candidates on the same cases flatters the larger choice, a two-fold line
scores each half of the cases at the choice the other half made, for both rules:

    OMP_NUM_THREADS=1 python benchmarks/probe_epochs.py --store eval-games/methods/sa2crq/store \\
        --data ../shared/data/games --seed 0 --epochs ep_0 [--weights 0,0.25,0.5,1,2,4]

``--split test --k 100 --at`` scores the test cases instead, at given (epoch, W) pairs, each
request for ``k`` items as ``sa2crq eval`` sends them (Recall@10 of the answer): for reading test
figures after a decision, never for choosing.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import torch
from probe_args import best_pair, head_flags, head_tail, hits_by_weight, open_store, probe_parser, two_fold

from indexer.training.examples import load_training_data
from indexer.training.validation import Validation, first_best, sample_cases
from sidcore.engines.torch_engine import TorchEngine
from sidcore.retriever import FUSED_BEAMS_PER_ITEM, Retriever


def main() -> None:
    ap = probe_parser(__doc__)
    ap.add_argument("--epochs", type=Path, required=True, help="The folder of the run's select-<epoch>.pt files.")
    ap.add_argument("--weights", type=lambda s: [float(x) for x in s.split(",")], default=[0, 0.25, 0.5, 1, 2, 4],
                    help="The item weights the trainer chooses among (its --item-weights).")
    ap.add_argument("--split", choices=["valid", "test"], default="valid")
    ap.add_argument("--k", type=int, default=10, help="Items requested per case (Recall@10 is read from the answer).")
    ap.add_argument("--at", default="", help="With --split test: epoch:W pairs to score, e.g. 7:4,8:2.")
    args = ap.parse_args()

    served = open_store(args.store)
    decoder, trie = served.decoder, served.trie
    files = {int(re.fullmatch(r"select-(\d+)\.pt", f.name)[1]): f for f in args.epochs.glob("select-*.pt")}
    if not files:
        ap.error(f"{args.epochs} holds no select-<epoch>.pt files")
    data = load_training_data(args.data)
    v = Validation([])
    if args.split == "test":
        cases = sample_cases(data.test, args.cases, args.seed)  # the users `sa2crq eval --max-cases --seed` scores
        try:
            pairs = [(int(e), float(w)) for e, w in (p.split(":") for p in args.at.split(","))]
        except ValueError:
            ap.error(f"--at takes epoch:W pairs such as 7:4,8:2, got {args.at!r}")
    else:
        if 0 not in args.weights:
            ap.error("--weights must hold 0: the trainer's rule chooses the epoch by the SID beams alone (W 0)")
        cases = sample_cases(data.valid, args.cases, args.seed)
        pairs = [(e, w) for e in sorted(files) for w in args.weights]
    if missing := sorted({e for e, _ in pairs} - set(files)):
        ap.error(f"{args.epochs} holds no select-<epoch>.pt for epochs {missing}")
    is_head = head_flags(served.art, [c.target for c in cases])
    # validation decodes as the trainer's Validation does; test requests as `sa2crq eval` sends them
    beams = max(v.beam_width, args.k if args.split == "valid" else FUSED_BEAMS_PER_ITEM * args.k)
    print(f"decoder {decoder.version} (lp {decoder.spec.length_penalty:g}, "
          f"W {decoder.spec.item_weight:g}); {len(cases)} {args.split} cases ({int(is_head.sum())} head / "
          f"{int((~is_head).sum())} tail); epochs {sorted(files)}", flush=True)
    hit, rr = {}, {}
    for epoch in sorted({e for e, _ in pairs}):
        t0 = time.perf_counter()
        state = torch.load(files[epoch], weights_only=False)
        decoder.model.load_state_dict(state["model"])
        decoder.inputs.load_state_dict(state["inputs"])
        # a new Decoder and engine per epoch, as the trainer validates: nothing cached from the last weights
        decoder = dataclasses.replace(decoder)
        engine = TorchEngine(decoder, served.mask, length_penalty=decoder.spec.length_penalty)
        weights = [w for e, w in pairs if e == epoch]
        # W 0 ranks by the SID scores alone (its own decode); the positive weights share one
        for group in ([w for w in weights if w == 0], [w for w in weights if w > 0]):
            if not group:
                continue
            r = Retriever(decoder, engine, beam_width=v.beam_width, max_beam_width=beams, item_weight=group[0],
                          head_proposals_per_item=v.head_proposals_per_item)
            h, rk = hits_by_weight(r, trie, cases, args.k, v.batch, group, at=v.k)
            for j, w in enumerate(group):
                hit[epoch, w], rr[epoch, w] = h[:, j], rk[:, j]
        print(f"epoch {epoch}: R@10 by W " + ", ".join(f"{w:g}: {hit[epoch, w].mean():.4f}" for w in weights)
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.split == "test":
        for pair in pairs:
            print(f"test, epoch {pair[0]} W {pair[1]:g}: R@10 {hit[pair].mean():.4f}, head / tail {head_tail(hit[pair], is_head)}")
        return
    every = np.ones(len(cases), bool)
    for name, rule in (("beams, then W", by_beams), ("the answer (epoch and W together)", best_pair)):
        pick = rule(pairs, hit, rr, every)
        got, picks = two_fold(rule, pairs, hit, rr)
        print(f"epoch by {name}: epoch {pick[0]} W {pick[1]:g} -> R@10 {hit[pick].mean():.4f}, MRR@10 {rr[pick].mean():.4f}, "
              f"head / tail {head_tail(hit[pick], is_head)}; two-fold R@10 {got.mean():.4f}, head / tail {head_tail(got, is_head)} "
              f"(chosen {', '.join(f'epoch {e} W {w:g}' for e, w in picks)})", flush=True)


def by_beams(pairs: list[tuple[int, float]], hit: dict, rr: dict, on: np.ndarray) -> tuple[int, float]:
    """The trainer's rule on the cases ``on`` (bool [C]): the epoch whose beams alone (W 0) score
    the best Recall@10 (the first among equals), then its best W by Recall@10, MRR@10, the first."""
    epochs = sorted({e for e, _ in pairs})
    epoch = first_best(epochs, {e: (hit[e, 0.0][on].mean(),) for e in epochs})
    weights = [w for e, w in pairs if e == epoch]
    return epoch, first_best(weights, {w: (hit[epoch, w][on].mean(), rr[epoch, w][on].mean()) for w in weights})


if __name__ == "__main__":
    main()
