"""Soak and chaos: a fixed request rate for T minutes while Redis restarts and releases flip.

Self-hosted (no --url): starts its own Redis (the embedded redis-server) and ``--replicas``
``sa2crq serve`` processes following it, publishes the store's decoder and index as the active
release, runs, and stops them all:

    python loadtest/soak.py --store demo/store --data demo/data --minutes 5 --rate 10 [--replicas 2]

Against running replicas (--url, once per replica; requests go round robin): Redis is restarted
by a command of yours, releases flip through --redis (the Redis the replicas follow):

    python loadtest/soak.py --url http://127.0.0.1:8000 --redis redis://127.0.0.1:6379/0 --data DIR \\
        --restart-redis "docker-compose -p sa2crq -f docker/docker-compose.yml restart redis" --minutes 10 --rate 20

Timeline: phases *before* [0, T/3), *during* [T/3, 2T/3), *after* [2T/3, T]. During: Redis
restarts at 0.40 T; from 0.50 T the flips run: with ``--flip-to B,C`` each named release is
activated in turn (a retrained pair, one with other codebook sizes: replicas load each in the
background and swap), the next once answers came from the last one; then the first release A again
at 0.58 T, or once answers came from the last target if that is later (at the latest at 0.62 T).
Without --flip-to, B is the active index republished under the id ``A-soak`` (same SIDs, another
version to load) when --store holds it, else another complete index version found in Redis.

Requests are sent open-loop (on schedule, whatever the answers' latency), drawn from the same mix
as the Locust file. Prints requests, failures, p50/p99/max latency, /readyz states and versions
served per phase, and how often every replica was not ready at once. ``--record FILE`` writes
every request and its answer as JSON lines (to check answers offline). Exits 1 on more failed
requests than --max-failures, when a flip was made but no answer came from its target, or when
all replicas were not ready at once; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
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
    p.add_argument("--url", action="append", help="A replica under test (repeat for several); default: start them (needs --store).")
    p.add_argument("--replicas", type=int, default=1, help="Self-hosted: how many `sa2crq serve` processes follow the Redis.")
    p.add_argument("--flip-to", default="", help="Releases to activate in turn during the run (comma-separated names).")
    p.add_argument("--record", type=Path, help="Write every request and its answer here (JSON lines).")
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
    if args.replicas < 1:
        p.error("--replicas must be at least 1")
    if args.minutes <= 0 or args.rate <= 0:
        p.error("--minutes and --rate must be positive")
    return args


@dataclasses.dataclass
class Sample:
    sent: float  # seconds since the start of the run
    seconds: float
    problem: str | None  # None: a good answer
    version: str | None  # the index version that answered
    release: str | None = None  # the release that answered


class Chaos:
    """Redis restarts and version flips, in the self-hosted or the external setting.

    ``flips``: releases to activate in turn (then back to the active one); without them, one flip
    to a copy of the active index (``version_b``) and back.
    """

    def __init__(self, redis_url: str | None, restart_cmd: str | None, embedded=None, store: Path | None = None,
                 flips: list[str] | None = None):
        self.redis_url, self.restart_cmd, self.embedded = redis_url, restart_cmd, embedded
        self.version_a = self.version_b = None
        self.release_a, self.flips = None, list(flips or [])
        if redis_url and self.flips:
            self._prepare_releases()
        elif redis_url:
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

    def _prepare_releases(self) -> None:
        index = self._index()
        try:
            active = index.active_release()
            if active is None:
                raise SystemExit(f"no active release in {self.redis_url}")
            for name in self.flips:
                index.release(name)  # NotFoundError names a release that is not there
            self.release_a = active.name
        finally:
            index.r.close()

    def activate_release(self, name: str) -> str:
        index = self._index()
        try:
            was = index.activate_release(name)
        finally:
            index.r.close()
        return f"activated release {name} (was {was.name if was else 'none'})"

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


async def run(args: argparse.Namespace, urls: list[str], chaos: Chaos) -> tuple[list[Sample], list[tuple[float, str]], list[tuple[float, str]]]:
    """Returns the samples, the chaos events and the readiness probes; a probe's state is one
    replica's state, or with several replicas all of theirs joined by '/' (e.g. "ready/503")."""
    duration = args.minutes * 60.0
    mix = RequestMix(Catalog(args.data), int_list(args.k_values), beam_list(args.beam_widths), parse_mix(args.mix), seed=args.seed)
    samples: list[Sample] = []
    events: list[tuple[float, str]] = []
    readiness: list[tuple[float, str]] = []
    record = open(args.record, "w", encoding="utf-8") if args.record else None
    limits = httpx.Limits(max_connections=args.max_in_flight, max_keepalive_connections=args.max_in_flight)
    async with contextlib.AsyncExitStack() as stack:
        # No retries: a refused or failed request is what the soak counts.
        clients = {u: await stack.enter_async_context(AsyncClient(u, timeout=args.timeout, retries=0, limits=limits)) for u in urls}
        t0 = time.monotonic()

        def now() -> float:
            return time.monotonic() - t0

        async def one(sent: float, url: str, body: dict) -> None:
            start = time.monotonic()
            answer, status = None, None
            try:
                answer = (await clients[url].retrieve(**body)).model_dump()
                status, problem = 200, check_answer(body, 200, answer)
            except ServiceError as e:
                status, problem = e.status, f"status {e.status}"
            except (httpx.HTTPError, ValueError) as e:
                problem = f"{type(e).__name__}"
            version, release = (answer.get("index_version"), answer.get("release")) if answer else (None, None)
            samples.append(Sample(sent, time.monotonic() - start, problem, version, release))
            if record is not None:
                record.write(json.dumps({"sent": sent, "url": url, "body": body, "status": status, "answer": answer}) + "\n")

        async def state_of(url: str) -> str:
            try:
                return (await asyncio.wait_for(clients[url].ready(), 2)).get("status", "?")
            except (httpx.HTTPError, ValueError, TimeoutError) as e:
                return type(e).__name__

        async def probe() -> None:
            while now() < duration:
                states = await asyncio.gather(*(state_of(u) for u in urls))
                readiness.append((now(), "/".join(states)))
                await asyncio.sleep(0.25 if len(urls) > 1 else 1.0)

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
            if chaos.flips:
                await flip_releases()
                return
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

        async def answered_by(release: str, deadline: float) -> bool:
            while now() < deadline and not any(s.release == release for s in samples):
                await asyncio.sleep(0.1)
            return any(s.release == release for s in samples)

        async def flip_releases() -> None:
            gap = (FLIP_BACK_AT - FLIP_AT) * duration / len(chaos.flips)
            for i, name in enumerate(chaos.flips):
                await at(FLIP_AT + i * gap / duration)
                await note(await asyncio.to_thread(chaos.activate_release, name))
                seen = await answered_by(name, FLIP_BACK_BY * duration)
                await note(f"first answer from release {name} at t={now():.1f} s" if seen else f"no answer from release {name} by t={now():.1f} s")
            await at(FLIP_BACK_AT)
            await note(await asyncio.to_thread(chaos.activate_release, chaos.release_a))

        side = [asyncio.create_task(probe()), asyncio.create_task(script())]
        pending: set[asyncio.Task] = set()
        i = 0
        while (due := i / args.rate) < duration:
            await asyncio.sleep(max(0.0, due - now()))
            _, body = mix.next()
            if len(pending) >= args.max_in_flight:
                samples.append(Sample(now(), 0.0, "client backlog full", None))
            else:
                task = asyncio.create_task(one(now(), urls[i % len(urls)], body))
                pending.add(task)
                task.add_done_callback(pending.discard)
            i += 1
        await asyncio.gather(*pending, *side)
    if record is not None:
        record.close()
    return samples, events, readiness


def all_down(readiness: list[tuple[float, str]]) -> int:
    """Probes at which no replica was ready (nor degraded, which still answers)."""
    return sum(1 for _, joined in readiness if not any(s in ("ready", "degraded") for s in joined.split("/")))


def phase_of(t: float, duration: float) -> str:
    return PHASES[min(2, int(3 * t / duration))]


def report(samples: list[Sample], readiness: list[tuple[float, str]], duration: float) -> str:
    head = (f"{'phase':<8} {'window s':>11} {'requests':>9} {'failures':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  "
            "readyz (samples)  index versions answered  (releases)")
    lines = [head, "-" * len(head)]
    for name in (*PHASES, "total"):
        chosen = [s for s in samples if name == "total" or phase_of(s.sent, duration) == name]
        states = Counter(st for t, st in readiness if name == "total" or phase_of(t, duration) == name)
        ok = np.array([s.seconds for s in chosen if s.problem is None]) * 1000
        p50, p99, top = (f"{v:8.1f}" for v in np.quantile(ok, [0.5, 0.99, 1.0])) if len(ok) else [f"{'-':>8}"] * 3
        lo, hi = ((0, duration) if name == "total" else (PHASES.index(name) * duration / 3, (PHASES.index(name) + 1) * duration / 3))
        versions = Counter(s.version for s in chosen if s.version)
        releases = Counter(s.release for s in chosen if s.release)
        lines.append(f"{name:<8} {f'{lo:.0f}-{hi:.0f}':>11} {len(chosen):>9} {sum(s.problem is not None for s in chosen):>9} "
                     f"{p50} {p99} {top}  "
                     f"{', '.join(f'{k} {v}' for k, v in sorted(states.items()))}  "
                     f"{', '.join(f'{k} x{v}' for k, v in versions.most_common())}  "
                     f"(releases: {', '.join(f'{k} x{v}' for k, v in releases.most_common()) or '-'})")
    lines.append(f"all replicas not ready at once: {all_down(readiness)} of {len(readiness)} probes")
    problems = Counter(s.problem for s in samples if s.problem)
    for problem, n in problems.most_common(10):
        lines.append(f"failure x{n}: {problem}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration = args.minutes * 60
    flips = [f for f in args.flip_to.split(",") if f]
    services: list[Service] = []
    embedded = None
    try:
        if args.url is None:
            embedded = EmbeddedRedis().start()
            with embedded.client() as client:
                RedisIndex(client).publish_release(Store(args.store), name="soak-a", activate=True, progress=False)
            logs = Path(tempfile.mkdtemp(prefix="sa2crq-soak-"))
            services = [Service(args.store, embedded.url, logs / f"service-{i}.log") for i in range(args.replicas)]
            for service in services:
                print(f"starting sa2crq serve at {service.url} (log: {service.log_path}) with Redis {embedded.url}", flush=True)
            for service in services:
                service.wait_ready()
            chaos = Chaos(embedded.url, None, embedded=embedded, store=args.store, flips=flips)
            urls = [s.url for s in services]
        else:
            chaos = Chaos(args.redis_url, args.restart_redis, store=args.store, flips=flips)
            urls = args.url
        flipping = f"releases A={chaos.release_a} then {','.join(flips)}" if flips else f"versions A={chaos.version_a} B={chaos.version_b}"
        print(f"soak: {duration:.0f} s at {args.rate:g} requests/s against {', '.join(urls)}; {flipping}", flush=True)
        samples, _events, readiness = asyncio.run(run(args, urls, chaos))
    finally:
        for service in services:
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
    for name in flips:
        if not any(s.release == name for s in samples):
            print(f"FAIL: release {name} was activated but no answer came from it", file=sys.stderr)
            status = 1
    if all_down(readiness):
        print(f"FAIL: every replica was not ready at once in {all_down(readiness)} probe(s)", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
