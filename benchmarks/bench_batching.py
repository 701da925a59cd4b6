"""What the service adds on top of the engine: HTTP plus queueing, with one client and with 16;
optionally next to the service of another checkout (e.g. before issue 15), in the same run.

Builds a small store (a synthetic 2,000-item catalog, an SA²CRQ index, the default tiny Qwen3
decoder trained briefly: decode speed does not depend on training) and starts ``sa2crq serve`` on
it in a process of its own (embedded Redis, torch engine, one torch thread), as deployed; with
``--baseline DIR``, a second one running DIR's code (PYTHONPATH) on the same store. Then:

1. one client, sequential history requests, alternating between the services: per request the
   client-side latency, the engine time of that request (the growth of
   ``sa2crq_decode_seconds_sum`` on ``/metrics`` across it, scraped between requests, outside
   the timing), their difference (HTTP + queue) and, of it, the time the request waited in the
   batcher's queue (``sa2crq_queue_wait_seconds_sum``);
2. 16 clients back to back (closed loop, one asyncio loop), in alternating windows of a few
   seconds per service: throughput and latency.

Alternating keeps both services under the same machine load, which on a shared VM moves from
one minute to the next. Only what existed before issue 15 is used (``POST /retrieve``, the metrics).

    OMP_NUM_THREADS=1 python benchmarks/bench_batching.py [--baseline /tmp/sa2crq-old] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil


def build_store(root: Path, seed: int = 0):
    from indexer.build import BuildConfig, build_index
    from indexer.data.catalog import count_popularity, load_items, load_sequences
    from indexer.data.synthetic import SyntheticConfig, generate, write
    from indexer.quantizers import QuantizerConfig
    from indexer.training.config import TrainConfig
    from indexer.training.trainer import train_decoder
    from model_store import Store

    synth = generate(SyntheticConfig(num_items=2000, dim=32, seed=seed))
    paths = write(synth, root / "data", num_users=600, seed=seed)
    catalog = load_items(paths["items"]).with_vectors(synth.catalog.vectors)
    catalog = catalog.with_popularity(count_popularity(catalog, paths["sequences"]))
    store = Store(root / "store")
    version, _ = build_index(catalog, BuildConfig(method="sa2crq", quantizer=QuantizerConfig(sizes=(32, 64, 128), epochs=3)), store, progress=False)
    store.activate("index", version)
    decoder, _ = train_decoder(store, root / "data", TrainConfig(max_steps=20, val_cases=0, seed=seed), progress=False)
    store.activate("decoder", decoder)
    return store, [s for s in load_sequences(paths["sequences"]) if len(s) >= 3]


def seconds(http: httpx.Client) -> np.ndarray:
    """(engine decode, queue wait) seconds so far, from the service's Prometheus histograms."""
    text = http.get("/metrics").text
    return np.array([float(re.search(rf"^sa2crq_{name}_seconds_sum (\S+)$", text, re.M).group(1)) for name in ("decode", "queue_wait")])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``sa2crq serve`` on ``store`` in its own process, with ``code`` first on its PYTHONPATH."""

    def __init__(self, name: str, store: Path, root: Path, code: Path | None):
        self.name, port = name, free_port()
        env = {**os.environ, "SA2CRQ_STORE": str(store), "SA2CRQ_PORT": str(port), "SA2CRQ_TORCH_THREADS": "1",
               "SA2CRQ_LOG_LEVEL": "warning", "OMP_NUM_THREADS": "1"}
        env.pop("SA2CRQ_REDIS_URL", None)
        if code is not None:
            env["PYTHONPATH"] = str(code)
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "sa2crq.cli", "serve"], env=env, cwd=root)
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self._ps = psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        times = self._ps.cpu_times()
        return times.user + times.system

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"the {self.name} service did not come up")
            time.sleep(0.2)

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, help="a checkout whose service runs beside this one's, for comparison")
    ap.add_argument("--requests", type=int, default=300, help="sequential requests of the one client, per service")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--concurrent-seconds", type=float, default=30.0, help="per service")
    ap.add_argument("--window-seconds", type=float, default=5.0)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-batching-"))
    t = time.perf_counter()
    store, sequences = build_store(root)
    print(f"store built in {time.perf_counter() - t:.0f} s")
    services = [Service("this checkout", store.root, root, None)]
    if args.baseline:
        services.append(Service(f"baseline {args.baseline}", store.root, root, args.baseline))
    try:
        for s in services:
            s.wait_ready()
        bodies = [{"history": seq[-10:-1], "k": 10} for seq in sequences]
        for s in services:
            for body in bodies[:20]:  # warm up
                s.http.post("/retrieve", json=body).raise_for_status()
        latency = {s.name: [] for s in services}
        server = {s.name: [] for s in services}
        cpu = {s.name: [] for s in services}
        for i in range(args.requests):
            for s in services[:: 1 if i % 2 else -1]:  # alternate who goes first
                before = seconds(s.http)
                cpu_before = s.cpu_seconds()
                started = time.perf_counter()
                s.http.post("/retrieve", json=bodies[i % len(bodies)]).raise_for_status()
                latency[s.name].append(time.perf_counter() - started)
                cpu[s.name].append(s.cpu_seconds() - cpu_before)
                server[s.name].append(seconds(s.http) - before)

        def q(a, p):
            return float(np.quantile(a, p))

        print(f"\none client, {args.requests} sequential history requests per service (k 10, default beam 20), alternating:")
        for s in services:
            lat = np.array(latency[s.name]) * 1e3
            decode, queue = (np.array(server[s.name]) * 1e3).T
            print(f"  {s.name}")
            rows = (("engine decode", decode), ("client latency", lat), ("HTTP + queue", lat - decode), ("  of it queue", queue),
                    ("service CPU", np.array(cpu[s.name]) * 1e3))
            for name, a in rows:
                print(f"    {name:<15} mean {a.mean():6.2f} ms  p50 {q(a, .5):6.2f}  p99 {q(a, .99):6.2f}")

        done = {s.name: [] for s in services}
        busy = {s.name: 0.0 for s in services}

        async def window(s: Service, seconds_: float) -> None:
            stop = time.perf_counter() + seconds_
            limits = httpx.Limits(max_connections=args.clients)
            async with httpx.AsyncClient(base_url=s.url, timeout=60, limits=limits) as http:
                async def one(n: int) -> None:
                    i = n
                    while time.perf_counter() < stop:
                        started = time.perf_counter()
                        (await http.post("/retrieve", json=bodies[i % len(bodies)])).raise_for_status()
                        done[s.name].append(time.perf_counter() - started)
                        i += args.clients

                started = time.perf_counter()
                await asyncio.gather(*(one(n) for n in range(args.clients)))
                busy[s.name] += time.perf_counter() - started

        windows = max(1, round(args.concurrent_seconds / args.window_seconds))
        for w in range(windows):
            for s in services[:: 1 if w % 2 else -1]:
                asyncio.run(window(s, args.window_seconds))
        print(f"\n{args.clients} clients back to back, {windows} windows of {args.window_seconds:.0f} s per service, alternating:")
        for s in services:
            lat = np.array(done[s.name]) * 1e3
            print(f"  {s.name:<40} throughput {len(lat) / busy[s.name]:6.1f} requests/s   latency p50 {q(lat, .5):6.1f} ms  p99 {q(lat, .99):6.1f} ms")
    finally:
        for s in services:
            s.close()


if __name__ == "__main__":
    main()
