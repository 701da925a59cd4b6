"""MicroBatcher on its own: an idle engine takes a request at once, requests queued behind a
running batch share the next one (up to max_batch), a full queue refuses at once, cancelled
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
        b = echo.start(max_batch=4)
        results = await asyncio.gather(*(b.submit(i) for i in range(10)))
        await b.stop()
        return results

    assert asyncio.run(scenario()) == [i * 10 for i in range(10)]
    assert sorted(p for batch in echo.batches for p in batch) == list(range(10))
    assert max(map(len, echo.batches)) == 4 and len(echo.batches) >= 3


def test_an_idle_engine_takes_a_lone_request_at_once():
    echo = Echo()

    async def scenario():
        b = echo.start(max_batch=16)
        took = []
        for i in range(5):
            started = asyncio.get_running_loop().time()
            assert await b.submit(i) == i * 10
            took.append(asyncio.get_running_loop().time() - started)
        await b.stop()
        return took

    took = asyncio.run(scenario())
    assert echo.batches == [[i] for i in range(5)]
    assert max(took) < 0.05  # no waiting for company (the old policy waited max_wait_ms each time)


def test_requests_queued_behind_a_running_batch_leave_together():
    gate = threading.Event()
    echo = Echo(gate)

    async def scenario():
        b = echo.start(max_batch=4)
        first = b.submit("a")
        await asyncio.sleep(0.05)  # "a" runs alone, held by the gate
        behind = b.submit_many(list("bcdefg"))
        gate.set()
        done = await asyncio.gather(first, *behind)
        await b.stop()
        return done

    assert asyncio.run(scenario()) == [c * 10 for c in "abcdefg"]
    assert echo.batches == [["a"], list("bcde"), ["f", "g"]]


def test_submit_many_queues_all_or_nothing():
    gate = threading.Event()
    echo = Echo(gate)

    async def scenario():
        b = echo.start(max_batch=1, queue_size=3)
        running = b.submit(0)
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            b.submit_many([1, 2, 3, 4])
        assert b.depth == 0
        queued = b.submit_many([1, 2, 3])
        gate.set()
        done = await asyncio.gather(running, *queued)
        await b.stop()
        return done

    assert asyncio.run(scenario()) == [0, 10, 20, 30]


def test_a_full_queue_refuses_at_once_with_retry_after():
    gate = threading.Event()
    echo = Echo(gate)

    async def scenario():
        b = echo.start(max_batch=1, queue_size=2)
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
        b = MicroBatcher(process, max_batch=8)
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
        b = echo.start(max_batch=1)
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
