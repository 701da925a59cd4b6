"""Keeps every epoch's weights of a decoder training run, for probes that score each epoch
(``probe_epochs.py``). The trainer keeps one checkpoint, the last finished epoch's, and removes it
once the decoder is sealed in the store; this watches the store's checkpoint folder beside a run
and copies each new epoch's model and prompt-input weights to ``OUT/<phase>-<epoch>.pt``:

    sa2crq eval --data ../shared/data/games --methods sa2crq --baselines '' --out g0 &
    python benchmarks/keep_epochs.py --store g0/methods/sa2crq/store --out ep_0

It stops when the checkpoint folder it watched is gone (the run finished), or after ``--idle``
seconds without a checkpoint.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="The run's store (its checkpoints/ folder is watched).")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--every", type=float, default=10.0, help="Seconds between looks.")
    ap.add_argument("--idle", type=float, default=7200.0, help="Give up after this many seconds without a checkpoint.")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    seen: dict[Path, float] = {}
    last_seen = time.monotonic()
    while True:
        found = sorted((args.store / "checkpoints").glob("*/last.pt"))
        for path in found:
            try:
                stamp = path.stat().st_mtime
                if seen.get(path) == stamp:
                    continue
                # the trainer replaces last.pt atomically, so a read sees one whole epoch's state
                state = torch.load(path, weights_only=False)
            except FileNotFoundError:  # sealed and removed between the glob and the read
                continue
            seen[path], last_seen = stamp, time.monotonic()
            name = f"{state['phase']}-{state['progress']['epoch']}.pt"
            torch.save({"model": state["model"], "inputs": state["inputs"]}, args.out / name)
            print(f"kept {args.out / name}", flush=True)
        if (seen and not found) or time.monotonic() - last_seen > args.idle:
            return
        time.sleep(args.every)


if __name__ == "__main__":
    main()
