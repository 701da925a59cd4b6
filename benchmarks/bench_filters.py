"""Cost of exclusions and filters inside the decode, at beam 20 on a ~1M-item synthetic trie.

A trie like ``bench_index.py``'s (SIDs of 1-3 codes over codebooks 512, 2048, 4096, Zipf
prefixes, 1+ items per SID: 600k SIDs hold ~1M items) with three attributes: ``category`` (12
values, following the first code, as semantic IDs cluster a category), ``price`` (log-normal,
independent of the SID) and ``available`` (90%). The decoder is the default tiny Qwen3
(``TinyConfig()``, random weights: the cost of a decode step does not depend on training, and
untrained beams wander over the whole trie, the worst case for pruning) run by the torch engine.

Modes, interleaved request by request in one run so all see the same machine:

    none          no item mask
    history       a 50-item history excluded (the service's default), no filter
    random10      history excluded + a filter keeping 10% of items spread over the whole trie
                  (a price band: prunes few prefixes, many SIDs)
    clustered10   history excluded + a filter keeping ~10% of items in a few subtrees
                  (categories: prunes whole first-code subtrees)

Per request: the wall time of building its item mask (the filter's cached mask, the history
excluded on top) plus the decode; per step: the time between two ``BeamSearch.advance`` calls
(forward + mask + selection). The first (uncached) evaluation of each filter is timed apart.

    OMP_NUM_THREADS=1 python benchmarks/bench_filters.py [--sids 600000] [--requests 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import SIZES, synthetic_sids  # noqa: E402  (a script beside this one)

from sidcore.decoder.model import TinyConfig, new_tiny_model  # noqa: E402
from sidcore.decoder.vocab import SIDVocab  # noqa: E402
from sidcore.engines import beam as beam_module  # noqa: E402
from sidcore.engines.torch_engine import TorchEngine  # noqa: E402
from sidcore.index.attributes import Attributes, AttributeSpec, Column, Condition, Filter  # noqa: E402
from sidcore.index.item_mask import ItemMask  # noqa: E402
from sidcore.index.mask import TrieMask  # noqa: E402
from sidcore.index.trie import Trie, pack_strings  # noqa: E402

BEAMS = 20
HISTORY = 50
TEXT_VOCAB = 1000  # token ids below the SID range: random prompts are drawn from them


def build_trie(num_sids: int, seed: int) -> Trie:
    codes, lengths = synthetic_sids(num_sids, seed)
    counts = np.random.default_rng(seed).geometric(0.6, len(lengths))
    ids = [f"item-{i}" for i in range(int(counts.sum()))]
    offsets, blob = pack_strings(ids)
    return Trie.from_groups(SIZES, codes, lengths, counts, offsets, blob, "bench")


def attributes(trie: Trie, seed: int) -> Attributes:
    rng = np.random.default_rng(seed)
    first_code = np.array([trie.sid_of(int(n))[0] for n in trie.item_node]) if trie.num_items < 50_000 else _first_codes(trie)
    category = (first_code * 12 // SIZES[0]).astype(np.int32)
    price = np.round(rng.lognormal(3.5, 1.0, trie.num_items), 2)
    available = (rng.random(trie.num_items) < 0.9).astype(np.int8)
    return Attributes((
        Column(AttributeSpec("category", "categorical"), category, tuple(f"cat-{i}" for i in range(12))),
        Column(AttributeSpec("price", "numeric"), price),
        Column(AttributeSpec("available", "boolean"), available),
    ), trie.num_items)  # fmt: skip


def _first_codes(trie: Trie) -> np.ndarray:
    """Per item row, the first code of its SID (walk each node up to depth 1, vectorised)."""
    node = trie.item_node.astype(np.int64)
    while True:
        up = trie.depth[node] > 1
        if not up.any():
            return trie.code[node].astype(np.int64)
        node = np.where(up, trie.parent[node], node)


def clustered_filter(attrs: Attributes, share: float) -> Filter:
    """Categories, most populous first, until about ``share`` of the items."""
    counts = np.bincount(attrs["category"].data, minlength=12) / attrs.num_rows
    chosen, total = [], 0.0
    for c in np.argsort(counts):  # smallest first, to land near the share
        if total + counts[c] > share * 1.15:
            continue
        chosen.append(f"cat-{c}")
        total += counts[c]
    return Filter(must=(Condition.any_of("category", chosen),))


class StepClock:
    """Records the time between consecutive ``BeamSearch.advance`` calls (one decode step each)."""

    def __init__(self):
        self.steps: list[float] = []
        self._last: float | None = None
        original = beam_module.BeamSearch.advance

        def timed(search, logp):
            now = time.perf_counter()
            if self._last is not None:
                self.steps.append(now - self._last)
            self._last = now
            return original(search, logp)

        beam_module.BeamSearch.advance = timed

    def start(self) -> None:
        self._last = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sids", type=int, default=600_000, help="distinct SIDs (x ~1.67 items each)")
    ap.add_argument("--requests", type=int, default=300, help="requests per mode")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    t = time.perf_counter()
    trie = build_trie(args.sids, args.seed)
    attrs = attributes(trie, args.seed)
    vocab = SIDVocab(SIZES, base=TEXT_VOCAB)
    mask = TrieMask(trie, vocab)
    moves = mask.moves
    print(f"trie: {trie.num_sids:,} SIDs, {trie.num_items:,} items, {trie.num_nodes:,} nodes, {moves.num_moves:,} moves "
          f"(built in {time.perf_counter() - t:.1f} s)")

    model = new_tiny_model(TinyConfig(), TEXT_VOCAB + vocab.num_local, pad_id=0, seed=args.seed).eval()
    engine = TorchEngine(SimpleNamespace(model=model, tokenizer=SimpleNamespace(pad_token_id=0)), mask)

    price_cut = float(np.quantile(attrs["price"].data, 0.10))
    filters = {"random10": Filter(must=(Condition.range("price", lte=price_cut),)), "clustered10": clustered_filter(attrs, 0.10)}
    cached: dict[str, ItemMask] = {}
    for name, flt in filters.items():
        t = time.perf_counter()
        rows = attrs.evaluate(flt)
        t_eval = time.perf_counter() - t
        cached[name] = ItemMask.of_rows(moves, rows)
        t_mask = time.perf_counter() - t - t_eval
        print(f"filter {name}: keeps {rows.mean():.1%} of items; first use: evaluate {t_eval * 1e3:.1f} ms + mask "
              f"{t_mask * 1e3:.1f} ms ({cached[name].nbytes / 2**20:.1f} MiB cached), later uses: a cache hit")
    t = time.perf_counter()
    everything = ItemMask.everything(moves)
    print(f"the no-filter base mask (once per trie snapshot): {(time.perf_counter() - t) * 1e3:.1f} ms")

    rng = np.random.default_rng(args.seed + 1)
    clock = StepClock()
    modes = ("none", "history", "random10", "clustered10")
    per_request = {m: [] for m in modes}
    per_step = {m: [] for m in modes}
    mask_ms = {m: [] for m in modes}
    for r in range(args.requests + 5):  # the first 5 rounds warm up
        prompt = rng.integers(1, TEXT_VOCAB, size=40).tolist()
        history = rng.integers(0, trie.num_items, size=HISTORY)
        for mode in modes:
            clock.steps.clear()
            started = time.perf_counter()
            if mode == "none":
                item_mask = None
            else:
                item_mask = (everything if mode == "history" else cached[mode]).excluding(history)
            built = time.perf_counter()
            clock.start()
            engine.decode([prompt], BEAMS, BEAMS, mask=mask, item_masks=[item_mask])
            done = time.perf_counter()
            if r >= 5:
                per_request[mode].append(done - started)
                per_step[mode].extend(clock.steps)
                mask_ms[mode].append(built - started)

    def q(values, p):
        return float(np.quantile(np.asarray(values) * 1e3, p))

    base50, base99 = q(per_request["none"], 0.5), q(per_request["none"], 0.99)
    step50 = q(per_step["none"], 0.5)
    print(f"\n{args.requests} requests per mode, beam {BEAMS}, k {BEAMS}, history {HISTORY} items, OMP_NUM_THREADS=1")
    print(f"{'mode':<12} {'request p50':>11} {'p99 ms':>7} {'p50 vs none':>11} {'p99 vs none':>11} {'step p50':>9} {'p99 ms':>7} "
          f"{'step p50 vs none':>16} {'mask build p50 ms':>17}")
    for m in modes:
        print(f"{m:<12} {q(per_request[m], 0.5):>11.2f} {q(per_request[m], 0.99):>7.2f} {q(per_request[m], 0.5) / base50 - 1:>+11.1%} "
              f"{q(per_request[m], 0.99) / base99 - 1:>+11.1%} {q(per_step[m], 0.5):>9.3f} {q(per_step[m], 0.99):>7.3f} "
              f"{q(per_step[m], 0.5) / step50 - 1:>+16.1%} {q(mask_ms[m], 0.5):>17.3f}")


if __name__ == "__main__":
    main()
