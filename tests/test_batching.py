"""MicroBatcher on its own: batches fill up to max_batch, a full queue refuses at once, cancelled
jobs are skipped, a failing batch fails its callers, stop() fails what still waits."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.batching import MicroBatcher, QueueFull


class Echo:
    """A ``process`` that answers each payload times ten, optionally held until ``gate`` opens."""

    def __init__(self, gate: threading.Event | None = None):
        self.gate, self.batches, self.batcher = gate, [], None

    def __call__(self, jobs):
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append([j.payload for j in jobs])
        for job in jobs:
            self.batcher.resolve(job, job.payload * 10)

    def start(self, **kwargs) -> MicroBatcher:
        self.batcher = MicroBatcher(self, **kwargs)
        self.batcher.start()
        return self.batcher


def test_concurrent_submissions_share_batches_up_to_max_batch():
    echo = Echo()

    async def scenario():
        b = echo.start(max_batch=4, max_wait_s=0.05)
        results = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.stop()
        return results

    assert asyncio.run(scenario()) == [i * 10 for i in range(10)]
    assert sorted(p for batch in echo.batches for p in batch) == list(range(10))
    assert max(map(len, echo.batches)) == 4 and len(echo.batches) >= 3


def test_a_full_queue_refuses_at_once_with_retry_after():
    gate = threading.Event()
    echo = Echo(gate)

    async def scenario():
        b = echo.start(max_batch=1, max_wait_s=0, queue_size=2)
        first = b.submit(0)
        await asyncio.sleep(0.05)  # the runner took job 0 and is blocked on the gate
        queued = [b.submit(1), b.submit(2)]
        with pytest.raises(QueueFull) as refused:
            b.submit(3)
        assert refused.value.retry_after_s >= 1 and b.depth == 2
        gate.set()
        done = await asyncio.gather(first, *queued)
        await b.stop()
        return done

    assert asyncio.run(scenario()) == [0, 10, 20]


def test_a_cancelled_job_is_skipped_and_a_failing_batch_fails_its_callers():
    gate = threading.Event()
    seen: list[list] = []

    def process(jobs):
        gate.wait(10)
        seen.append([j.payload for j in jobs])
        raise RuntimeError("engine broke")

    async def scenario():
        b = MicroBatcher(process, max_batch=8, max_wait_s=0)
        b.start()
        running = b.submit("a")
        await asyncio.sleep(0.05)
        waiting, dropped = b.submit("b"), b.submit("c")
        dropped.cancel()
        gate.set()
        outcomes = await asyncio.gather(running, waiting, return_exceptions=True)
        await b.stop()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) and "engine broke" in str(o) for o in outcomes)
    assert seen == [["a"], ["b"]]  # "c" was cancelled while queued: never processed


def test_stop_fails_what_still_waits():
    gate = threading.Event()
    echo = Echo(gate)

    async def scenario():
        b = echo.start(max_batch=1, max_wait_s=0)
        running = b.submit(1)
        await asyncio.sleep(0.05)
        waiting = b.submit(2)
        stopping = asyncio.ensure_future(b.stop())
        await asyncio.sleep(0.05)
        gate.set()
        await stopping
        return await asyncio.gather(running, waiting, return_exceptions=True)

    ran, left = asyncio.run(scenario())
    assert ran == 10
    assert isinstance(left, RuntimeError) and "shutting down" in str(left)
