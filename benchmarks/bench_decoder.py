"""Tiny decoder on ../shared/data/scientific: Recall@10 vs popularity, and decode latency.

1. Builds an SA²CRQ index and trains the tiny Qwen3 decoder (or reuses them from ``--store``).
2. Recall@10 on the validation split (history item_ids[:-2] -> item_ids[-2]), next to a
   popularity baseline (the 10 most popular training items).
3. Decode latency per request (batch of one) at beam 20 and 100, constrained and unconstrained
   interleaved in the same run, for the torch engine and (if installed) the vLLM engine.

    python benchmarks/bench_decoder.py [--decoder-epochs 8] [--engines torch,vllm] [--store DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from indexer.build import BuildConfig, build_index
from indexer.data.catalog import count_popularity, load_items
from indexer.quantizers import QuantizerConfig
from indexer.training.config import TrainConfig
from indexer.training.examples import load_training_data
from indexer.training.trainer import train_decoder
from model_store import Store
from sidcore.decoder.bundle import load_decoder
from sidcore.decoder.vocab import SIDVocab
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index import Trie, TrieMask
from sidcore.index.artifact import load_index
from sidcore.retriever import Query, Retriever


def recall_at(engine, decoder, trie, examples, k: int, beam: int, batch: int) -> float:
    retriever = Retriever(decoder, engine, beam_width=beam, max_beam_width=beam)
    hits = 0
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        results, _ = retriever.retrieve(trie, [Query(ex.query, ex.history, k=k) for ex in chunk])
        hits += sum(ex.target in {it.item_id for it in r.items} for ex, r in zip(chunk, results))
    return hits / len(examples)


def latency(engine, prompts, beam: int) -> dict[str, np.ndarray]:
    """Per-request ms, constrained and unconstrained interleaved so both see the same noise."""
    out = {"constrained": [], "unconstrained": []}
    for p in prompts:
        for mode in out:
            t = time.perf_counter()
            engine.decode([p], beam_width=beam, num_sids=beam, constrained=mode == "constrained")
            out[mode].append((time.perf_counter() - t) * 1e3)
    return {m: np.asarray(v) for m, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scientific")
    ap.add_argument("--store", type=Path, help="Reuse/keep the index and decoder here (default: a temp dir).")
    ap.add_argument("--sizes", default="128,256,512")
    ap.add_argument("--decoder-epochs", type=int, default=TrainConfig().epochs)
    ap.add_argument("--eval-users", type=int, default=2000)
    ap.add_argument("--latency-requests", type=int, default=50)
    ap.add_argument("--engines", default="torch,vllm")
    args = ap.parse_args()
    torch.manual_seed(0)

    store = Store(args.store or tempfile.mkdtemp(prefix="bench-decoder-"))
    if store.latest("index") is None:
        catalog = load_items(args.data / "items.jsonl")
        catalog = catalog.with_popularity(count_popularity(catalog, args.data / "sequences.jsonl", holdout_last=2))
        cfg = BuildConfig(method="sa2crq", quantizer=QuantizerConfig(sizes=tuple(int(s) for s in args.sizes.split(","))))
        version, _ = build_index(catalog, cfg, store)
        store.activate("index", version)
    data = load_training_data(args.data)
    if store.latest("decoder") is None:
        t = time.perf_counter()
        version, summary = train_decoder(store, args.data, TrainConfig(epochs=args.decoder_epochs), data=data)
        store.activate("decoder", version)
        print(f"trained decoder {version} in {time.perf_counter() - t:.0f} s: {summary}")
    decoder = load_decoder(store)
    art = load_index(store, decoder.spec.index_version)
    trie = Trie.from_artifact(art)
    mask = TrieMask(trie, SIDVocab(art.sizes, decoder.spec.base))
    print(f"index {art.version}: {trie.num_sids} SIDs over {len(art.item_ids)} items; decoder {decoder.version}")

    rng = np.random.default_rng(0)
    valid = [data.valid[i] for i in rng.permutation(len(data.valid))[: args.eval_users]]
    popular = [art.item_ids[i] for i in np.argsort(-art.popularity, kind="stable")[:10]]
    pop_recall = np.mean([ex.target in popular for ex in valid])

    engines = {"torch": TorchEngine(decoder, mask)}
    if "vllm" in args.engines.split(","):
        try:
            from service.engines.vllm_engine import VLLMEngine

            os.environ.setdefault("OMP_NUM_THREADS", "1")
            engines["vllm"] = VLLMEngine(decoder, mask)
        except ImportError as e:
            print(f"vLLM engine skipped: {e}")

    t = time.perf_counter()
    rec = recall_at(engines["torch"], decoder, trie, valid, k=10, beam=20, batch=16)
    print(f"Recall@10 on {len(valid)} validation users: decoder (beam 20) {rec:.4f} | popularity {pop_recall:.4f}  [{time.perf_counter() - t:.0f} s]")

    prompts = [decoder.prompt_ids(None, [(h, trie.sid_of(trie.node_of_item(h))) for h in ex.history]) for ex in valid[: args.latency_requests]]
    print(f"latency per request, ms (batch 1, {len(prompts)} requests; ratio = constrained / unconstrained, per request)")
    print(f"{'engine':8} {'beam':>4} {'constr p50':>10} {'constr p99':>10} {'free p50':>9} {'free p99':>9} {'ratio p50':>9}")
    for name, engine in engines.items():
        for beam in (20, 100):
            lat = latency(engine, prompts, beam)
            c, u = lat["constrained"], lat["unconstrained"]
            print(f"{name:8} {beam:>4} {np.median(c):>10.1f} {np.percentile(c, 99):>10.1f} {np.median(u):>9.1f} {np.percentile(u, 99):>9.1f} {np.median(c / u):>9.3f}")
    for engine in engines.values():
        close = getattr(engine, "close", None)
        if close:
            close()


if __name__ == "__main__":
    main()
