"""Decoder training speed: fp32 against bfloat16 autocast, at several batch sizes, and the full
against the layer SID softmax, in one run.

Trains the default tiny decoder (the product's trainer, ``train_decoder``) for ``--steps`` steps on
a synthetic catalog's histories and item views, once per (precision, ``batch_tokens``, SID
softmax), and prints steps/s and tokens/s from the trainer's own summary. bf16 pays off only
where the CPU has bf16 units (AMX or AVX-512-BF16, listed in /proc/cpuinfo) or on a GPU.
``--codebook-sizes`` sets the SID vocabulary (default: the catalog's), which the SID head's cost
grows with.

    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py [--steps 30] [--batch-tokens 2048,4096,8192] \
        [--precisions fp32,bf16] [--sid-softmax full,layer] [--codebook-sizes 512,1024,2048]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from indexer.build import BuildConfig, build_index
from indexer.data.catalog import count_popularity, load_items
from indexer.data.synthetic import SyntheticConfig, generate, write
from indexer.quantizers import QuantizerConfig
from indexer.training.config import TrainConfig
from indexer.training.trainer import train_decoder
from model_store import Store


def cpu_bf16_units() -> list[str]:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({f for f in flags if f in ("amx_bf16", "avx512_bf16")})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-tokens", default="2048,4096,8192")
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--sid-softmax", default="full")
    ap.add_argument("--codebook-sizes", default="")
    args = ap.parse_args()
    precisions = args.precisions.split(",")
    softmaxes = args.sid_softmax.split(",")
    if not set(precisions) <= {"fp32", "bf16"} or not set(softmaxes) <= {"full", "layer"}:
        ap.error("--precisions takes fp32 and/or bf16, --sid-softmax full and/or layer")
    sizes = tuple(int(m) for m in args.codebook_sizes.split(",")) if args.codebook_sizes else None

    root = Path(tempfile.mkdtemp(prefix="bench-train-step-"))
    synth = generate(SyntheticConfig(num_items=args.items, dim=64, seed=0))
    paths = write(synth, root / "data", num_users=args.items, seed=0)
    catalog = load_items(paths["items"]).with_vectors(synth.catalog.vectors)
    catalog = catalog.with_popularity(count_popularity(catalog, paths["sequences"], holdout_last=2))
    store = Store(root / "store")
    version, _ = build_index(catalog, BuildConfig(method="sa2crq", quantizer=QuantizerConfig(epochs=5, sizes=sizes)), store, progress=False)
    print(f"CPU bf16 units: {', '.join(cpu_bf16_units()) or 'none'}; {args.steps} steps per row below")
    print(f"{'precision':<10}{'batch_tokens':>13}{'sid_softmax':>12}{'steps/s':>9}{'tokens/s':>10}")
    for tokens in (int(t) for t in args.batch_tokens.split(",")):
        for precision in precisions:
            for softmax in softmaxes:
                cfg = TrainConfig(max_steps=args.steps, val_cases=0, batch_tokens=tokens, max_batch_rows=4096, bf16=precision == "bf16",
                                  sid_softmax=softmax)
                _, summary = train_decoder(store, root / "data", cfg, index_version=version, progress=False, log=lambda _m: None,
                                           checkpoints=root / "ck")
                print(f"{precision:<10}{tokens:>13}{softmax:>12}{summary['steps_per_s']:>9.2f}{summary['tokens_per_s']:>10}", flush=True)


if __name__ == "__main__":
    main()
