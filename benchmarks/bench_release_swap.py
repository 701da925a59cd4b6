"""What a release swap costs a replica: the time from activation to the first answer from the new
release, the peak RSS while two decoders are held, and request latency around the swap.

Builds two demo stores (the main job's pipeline, two seeds: two catalogs, two SA²CRQ indexes, two
decoders), publishes both as releases into an embedded Redis, starts one replica (in this
process, so its RSS is this process's), sends requests back to back, activates the second release
and samples RSS every 5 ms until answers come from it.

    OMP_NUM_THREADS=1 python benchmarks/bench_release_swap.py [--workdir /tmp/bench-swap] [--items 10000] [--decoder-epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import httpx
import psutil

from indexer.training.config import TrainConfig
from model_store import Store
from sa2crq.demo import run_demo
from sa2crq.wiring import background_server
from service.settings import Settings
from sidcore.index.embedded import EmbeddedRedis
from sidcore.index.redis_index import RedisIndex


def build(workdir: Path, items: int, epochs: int, decoder_epochs: int, seed: int) -> Store:
    store = Store(workdir / "store")
    if store.active("decoder") is None:
        train = TrainConfig(epochs=decoder_epochs, seed=seed)
        run_demo(workdir, items, epochs, train, seed, redis_url=None, serve=False, keep_serving=False, port=0)
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench-swap"))
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--decoder-epochs", type=int, default=2)
    args = ap.parse_args()

    stores = [build(args.workdir / f"seed{seed}", args.items, args.epochs, args.decoder_epochs, seed) for seed in (0, 1)]
    proc = psutil.Process()
    with EmbeddedRedis() as redis_server, redis_server.client() as client:
        index = RedisIndex(client)
        index.publish_release(stores[0], name="swap-a", activate=True, progress=False)
        index.publish_release(stores[1], name="swap-b", progress=False)
        settings = Settings(_env_file=None, redis_url=redis_server.url, port=0, cache_dir=args.workdir / "cache")
        with background_server(settings) as server, httpx.Client(base_url=server.url, timeout=30) as http:
            latencies: list[tuple[float, float, str]] = []
            stop = threading.Event()

            def load() -> None:
                i = 0
                while not stop.is_set():
                    t = time.perf_counter()
                    release = http.post("/retrieve", json={"query": f"swap {i}", "k": 10}).json()["release"]
                    latencies.append((t, time.perf_counter() - t, release))
                    i += 1

            worker = threading.Thread(target=load)
            worker.start()
            time.sleep(3)
            before = proc.memory_info().rss
            peak = before
            t0 = time.perf_counter()
            index.activate_release("swap-b")
            while not any(r == "swap-b" for _, _, r in latencies[-5:]):
                peak = max(peak, proc.memory_info().rss)
                time.sleep(0.005)
            swapped = time.perf_counter() - t0
            time.sleep(3)
            stop.set()
            worker.join()
            after = proc.memory_info().rss

    def ms(rows) -> str:
        values = sorted(d * 1000 for _, d, _ in rows)
        return f"p50 {statistics.median(values):.1f} ms, p99 {values[int(0.99 * (len(values) - 1))]:.1f} ms over {len(values)}" if values else "-"

    during = [row for row in latencies if t0 <= row[0] <= t0 + swapped]
    print(f"swap: activation -> first answer from the new release in {swapped:.2f} s "
          f"(decoder fetched from Redis and verified, model loaded, trie loaded, warm-up decodes)")
    print(f"RSS: {before / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB during (+{(peak - before) / 2**20:.0f}), "
          f"{after / 2**20:.0f} MiB after")
    print(f"latency before: {ms([r for r in latencies if r[0] < t0])}; during: {ms(during)}; "
          f"after: {ms([r for r in latencies if r[0] > t0 + swapped])}")
    print(f"answers: {sum(r == 'swap-a' for *_, r in latencies)} from swap-a, {sum(r == 'swap-b' for *_, r in latencies)} from swap-b, "
          "every one whole from one release")


if __name__ == "__main__":
    main()
