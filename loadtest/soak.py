"""Soak and chaos: a fixed request rate for T minutes while Redis restarts and the index version flips.

Self-hosted (no --url): starts its own Redis (the embedded redis-server) and ``sa2crq serve`` on
the store, publishes the store's active index, runs, and stops both:

    python loadtest/soak.py --store demo/store --data demo/data --minutes 5 --rate 10

Against a running stack (--url): Redis is restarted by a command of yours, versions flip through
--redis (the Redis the service follows):

    python loadtest/soak.py --url http://127.0.0.1:8000 --redis redis://127.0.0.1:6379/0 --data DIR \\
        --restart-redis "docker-compose -p sa2crq -f docker/docker-compose.yml restart redis" --minutes 10 --rate 20

Timeline: phases *before* [0, T/3), *during* [T/3, 2T/3), *after* [2T/3, T]. During: Redis
restarts at 0.40 T; at 0.50 T version B is activated, and A again at 0.58 T, or once answers
come from B if that is later (at the latest at 0.62 T). B is the active version A republished under the id ``A-soak`` (same SIDs,
another version to load) when --store holds A, else another complete version found in Redis.

Requests are sent open-loop (on schedule, whatever the answers' latency), drawn from the same mix
as the Locust file. Prints requests, failures, p50/p99/max latency, /readyz states and versions
served per phase. Exits 1 on more failed requests than --max-failures, or when a flip was made
but no answer came from B; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

# mix.py sits beside this script (loadtest/ is a folder of scripts, not a package)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mix import DEFAULT_MIX, Catalog, RequestMix, beam_list, check_answer, int_list, parse_mix

from model_store import Store
from sa2crq.client import AsyncClient, ServiceError
from sidcore.index.artifact import load_index
from sidcore.index.embedded import EmbeddedRedis, connect
from sidcore.index.redis_index import RedisIndex

PHASES = ("before", "during", "after")
RESTART_AT, FLIP_AT, FLIP_BACK_AT, FLIP_BACK_BY = 0.40, 0.50, 0.58, 0.62


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--url", help="Service under test; default: start one (needs --store).")
    p.add_argument("--store", type=Path, help="Model store: the self-hosted service serves it; version B is republished from it.")
    p.add_argument("--data", type=Path, required=True, help="Served catalog's folder (items.jsonl, sequences.jsonl).")
    p.add_argument("--redis", dest="redis_url", help="With --url: the Redis the service follows (for the version flip).")
    p.add_argument("--restart-redis", metavar="CMD", help="With --url: shell command that restarts that Redis.")
    p.add_argument("--redis-down", type=float, default=3.0, help="Self-hosted: seconds Redis stays down in the restart.")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=10.0, help="Requests per second, sent on schedule.")
    p.add_argument("--max-in-flight", type=int, default=128, help="Unanswered requests at most; a request beyond is a failure.")
    p.add_argument("--timeout", type=float, default=15.0, help="Client timeout per request (s).")
    p.add_argument("--k-values", default="5,10,20,50")
    p.add_argument("--beam-widths", default="default,20,32")
    p.add_argument("--mix", default=DEFAULT_MIX)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-failures", type=int, default=0, help="Failed requests tolerated before the exit status says so.")
    args = p.parse_args(argv)
    if args.url is None and args.store is None:
        p.error("give --url (a running service) or --store (start one here)")
    if args.url is None and (args.redis_url or args.restart_redis):
        p.error("--redis and --restart-redis go with --url; self-hosted runs use their own Redis")
    if args.minutes <= 0 or args.rate <= 0:
        p.error("--minutes and --rate must be positive")
    return args


@dataclasses.dataclass
class Sample:
    sent: float  # seconds since the start of the run
    seconds: float
    problem: str | None  # None: a good answer
    version: str | None


class Chaos:
    """Redis restarts and version flips, in the self-hosted or the external setting."""

    def __init__(self, redis_url: str | None, restart_cmd: str | None, embedded=None, store: Path | None = None):
        self.redis_url, self.restart_cmd, self.embedded = redis_url, restart_cmd, embedded
        self.version_a = self.version_b = None
        if redis_url:
            self._prepare_flip(store)

    def _index(self) -> RedisIndex:
        return RedisIndex(connect(self.redis_url))

    def _prepare_flip(self, store: Path | None) -> None:
        index = self._index()
        try:
            a = index.active()
            if a is None:
                raise SystemExit(f"no active index version in {self.redis_url}")
            if store is not None and a in {m.version for m in Store(store).versions("index")}:
                art = load_index(Store(store), a)
                b = index.publish_artifact(dataclasses.replace(art, version=f"{a}-soak"), progress=False).version
            else:
                others = [v.version for v in index.versions() if v.state == "complete" and v.version != a]
                b = others[-1] if others else None
            self.version_a, self.version_b = a, b
        finally:
            index.r.close()

    @property
    def can_restart(self) -> bool:
        return self.embedded is not None or self.restart_cmd is not None

    def restart_redis(self, down_s: float) -> str:
        t0 = time.monotonic()
        if self.embedded is not None:
            self.embedded.stop(keep_data=True)  # SHUTDOWN SAVE: the restarted server has every version
            time.sleep(down_s)
            self.embedded.start()
        else:
            done = subprocess.run(self.restart_cmd, shell=True, capture_output=True, text=True, timeout=300)
            if done.returncode:
                return f"restart command failed ({done.returncode}): {done.stderr.strip()[-300:]}"
        return f"Redis restarted in {time.monotonic() - t0:.1f} s"

    def activate(self, version: str) -> str:
        index = self._index()
        try:
            was = index.activate(version)
        finally:
            index.r.close()
        return f"activated {version} (was {was})"


class Service:
    """``sa2crq serve`` on a free local port, following the given Redis."""

    def __init__(self, store: Path, redis_url: str, log_path: Path):
        exe = shutil.which("sa2crq")
        if exe is None:
            raise SystemExit("sa2crq is not on PATH: pip install -e . first")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "SA2CRQ_STORE": str(store), "SA2CRQ_REDIS_URL": redis_url,
               "SA2CRQ_HOST": "127.0.0.1", "SA2CRQ_PORT": str(port)}
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([exe, "serve"], env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"sa2crq serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"sa2crq serve was not ready within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def run(args: argparse.Namespace, url: str, chaos: Chaos) -> tuple[list[Sample], list[tuple[float, str]], list[tuple[float, str]]]:
    duration = args.minutes * 60.0
    mix = RequestMix(Catalog(args.data), int_list(args.k_values), beam_list(args.beam_widths), parse_mix(args.mix), seed=args.seed)
    samples: list[Sample] = []
    events: list[tuple[float, str]] = []
    readiness: list[tuple[float, str]] = []
    limits = httpx.Limits(max_connections=args.max_in_flight, max_keepalive_connections=args.max_in_flight)
    # No retries: a refused or failed request is what the soak counts.
    async with AsyncClient(url, timeout=args.timeout, retries=0, limits=limits) as client:
        t0 = time.monotonic()

        def now() -> float:
            return time.monotonic() - t0

        async def one(sent: float, body: dict) -> None:
            start = time.monotonic()
            try:
                answer = await client.retrieve(**body)
                problem, version = check_answer(body, 200, answer.model_dump()), answer.index_version
            except ServiceError as e:
                problem, version = f"status {e.status}", None
            except (httpx.HTTPError, ValueError) as e:
                problem, version = f"{type(e).__name__}", None
            samples.append(Sample(sent, time.monotonic() - start, problem, version))

        async def probe() -> None:
            while now() < duration:
                try:
                    ready = await asyncio.wait_for(client.ready(), 2)
                    state = ready.get("status", "?")
                except (httpx.HTTPError, ValueError, TimeoutError) as e:
                    state = type(e).__name__
                readiness.append((now(), state))
                await asyncio.sleep(1.0)

        async def at(fraction: float) -> None:
            await asyncio.sleep(max(0.0, fraction * duration - now()))

        async def note(text: str) -> None:
            events.append((now(), text))
            print(f"  t={events[-1][0]:7.1f} s  {text}", flush=True)

        async def script() -> None:
            await at(RESTART_AT)
            if chaos.can_restart:
                await note("restarting Redis")
                await note(await asyncio.to_thread(chaos.restart_redis, args.redis_down))
            else:
                await note("no Redis restart (give --restart-redis CMD)")
            await at(FLIP_AT)
            if chaos.version_b is None:
                await note("no version flip (no second version: give --store, or publish one)")
                return
            await note(await asyncio.to_thread(chaos.activate, chaos.version_b))
            while now() < FLIP_BACK_BY * duration and not any(s.version == chaos.version_b for s in samples):
                await asyncio.sleep(0.1)
            seen = [s for s in samples if s.version == chaos.version_b]
            await note(f"first answer from {chaos.version_b} sent at t={min(s.sent for s in seen):.1f} s" if seen
                       else f"no answer from {chaos.version_b} by t={now():.1f} s")
            await at(FLIP_BACK_AT)  # B serves for a while before the flip back
            await note(await asyncio.to_thread(chaos.activate, chaos.version_a))

        side = [asyncio.create_task(probe()), asyncio.create_task(script())]
        pending: set[asyncio.Task] = set()
        i = 0
        while (due := i / args.rate) < duration:
            await asyncio.sleep(max(0.0, due - now()))
            _, body = mix.next()
            if len(pending) >= args.max_in_flight:
                samples.append(Sample(now(), 0.0, "client backlog full", None))
            else:
                task = asyncio.create_task(one(now(), body))
                pending.add(task)
                task.add_done_callback(pending.discard)
            i += 1
        await asyncio.gather(*pending, *side)
    return samples, events, readiness


def phase_of(t: float, duration: float) -> str:
    return PHASES[min(2, int(3 * t / duration))]


def report(samples: list[Sample], readiness: list[tuple[float, str]], duration: float) -> str:
    head = f"{'phase':<8} {'window s':>11} {'requests':>9} {'failures':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  readyz (samples)  versions answered"
    lines = [head, "-" * len(head)]
    for name in (*PHASES, "total"):
        chosen = [s for s in samples if name == "total" or phase_of(s.sent, duration) == name]
        states = Counter(st for t, st in readiness if name == "total" or phase_of(t, duration) == name)
        ok = np.array([s.seconds for s in chosen if s.problem is None]) * 1000
        p50, p99, top = (f"{v:8.1f}" for v in np.quantile(ok, [0.5, 0.99, 1.0])) if len(ok) else [f"{'-':>8}"] * 3
        lo, hi = ((0, duration) if name == "total" else (PHASES.index(name) * duration / 3, (PHASES.index(name) + 1) * duration / 3))
        versions = Counter(s.version for s in chosen if s.version)
        lines.append(f"{name:<8} {f'{lo:.0f}-{hi:.0f}':>11} {len(chosen):>9} {sum(s.problem is not None for s in chosen):>9} "
                     f"{p50} {p99} {top}  "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(states.items()))}  "
                     f"{', '.join(f'{k} x{v}' for k, v in versions.most_common())}")
    problems = Counter(s.problem for s in samples if s.problem)
    for problem, n in problems.most_common(10):
        lines.append(f"failure x{n}: {problem}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration = args.minutes * 60
    service = embedded = None
    try:
        if args.url is None:
            embedded = EmbeddedRedis().start()
            with embedded.client() as client:
                RedisIndex(client).publish(Store(args.store), activate=True, progress=False)
            service = Service(args.store, embedded.url, Path(tempfile.mkdtemp(prefix="sa2crq-soak-")) / "service.log")
            print(f"starting sa2crq serve at {service.url} (log: {service.log_path}) with Redis {embedded.url}", flush=True)
            service.wait_ready()
            chaos = Chaos(embedded.url, None, embedded=embedded, store=args.store)
            url = service.url
        else:
            chaos = Chaos(args.redis_url, args.restart_redis, store=args.store)
            url = args.url
        print(f"soak: {duration:.0f} s at {args.rate:g} requests/s against {url}; "
              f"versions A={chaos.version_a} B={chaos.version_b}", flush=True)
        samples, _events, readiness = asyncio.run(run(args, url, chaos))
    finally:
        if service is not None:
            service.stop()
        if embedded is not None:
            embedded.close()
    print(report(samples, readiness, duration))
    failures = sum(s.problem is not None for s in samples)
    status = 0
    if failures > args.max_failures:
        print(f"FAIL: {failures} failed request(s) (tolerated: {args.max_failures})", file=sys.stderr)
        status = 1
    if chaos.version_b is not None and not any(s.version == chaos.version_b for s in samples):
        print(f"FAIL: version {chaos.version_b} was activated but no answer came from it", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
