"""Micro-batching: concurrent requests share engine calls, behind a bounded queue.

No idle waiting: when the engine has a free slot, a batch leaves at once with whatever is queued
(a lone request goes alone, immediately); requests that arrive while every slot is busy queue up
and leave together, up to ``max_batch``, as soon as a slot frees. Batching thus happens exactly
when it pays: behind a running batch. At most ``concurrency`` batches run at once, each in a
worker thread, so the event loop keeps accepting (and refusing) requests while the engine works.
The queue is bounded: a full queue refuses at once (the caller answers 429) rather than letting
latency grow without limit. A request whose caller has gone (timeout, disconnect) is cancelled;
it is skipped if its batch has not started, and its answer is dropped if it has.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


class QueueFull(Exception):
    def __init__(self, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(f"request queue is full; retry after {retry_after_s} s")


@dataclass
class Job:
    payload: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Runs ``process(jobs)`` on batches of submitted payloads.

    ``process`` runs in a worker thread and must resolve every job's future, through
    ``resolve``/``fail`` (safe from any thread, and a no-op for a cancelled job).

    Args:
        max_batch: payloads per batch at most.
        queue_size: payloads waiting at most; ``submit`` raises QueueFull beyond it.
        concurrency: batches in flight at once.
        on_batch: called with each batch (jobs still wanted) before it runs, e.g. for metrics.
    """

    def __init__(
        self,
        process: Callable[[list[Job]], None],
        max_batch: int = 16,
        queue_size: int = 256,
        concurrency: int = 1,
        on_batch: Callable[[Sequence[Job]], None] | None = None,
    ):
        self.process = process
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.concurrency = concurrency
        self.on_batch = on_batch
        self._queue: asyncio.Queue[Job] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task | None = None
        self._slots: asyncio.Semaphore | None = None
        self._inflight: set[asyncio.Future] = set()
        self._batch_seconds = 0.05  # running mean, for Retry-After

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self.queue_size)
        self._slots = asyncio.Semaphore(self.concurrency)
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sa2crq-batch")
        self._runner = asyncio.create_task(self._run(), name="sa2crq-batcher")

    async def stop(self) -> None:
        """Stop taking batches, let running ones finish, fail whatever still waits."""
        if self._runner:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        while self._queue and not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the service is shutting down"))
        if self._executor:
            self._executor.shutdown(wait=True)

    def submit(self, payload: Any) -> asyncio.Future:
        """Queue a payload; its future resolves with the result. Raises QueueFull at once."""
        return self.submit_many([payload])[0]

    def submit_many(self, payloads: list[Any]) -> list[asyncio.Future]:
        """Queue all payloads or none (QueueFull when they do not all fit). Queued in one go, from
        the event loop, so the runner sees them together and they share batches."""
        assert self._queue is not None, "start() first"
        if self._queue.qsize() + len(payloads) > self.queue_size:
            raise QueueFull(self.retry_after())
        jobs = [Job(p, self._loop.create_future()) for p in payloads]
        for job in jobs:
            self._queue.put_nowait(job)
        return [job.future for job in jobs]

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (at least 1: Retry-After is whole seconds)."""
        batches = self.depth / self.max_batch / self.concurrency
        return max(1, math.ceil(batches * self._batch_seconds))

    def resolve(self, job: Job, result: Any) -> None:
        self._loop.call_soon_threadsafe(_settle, job.future, result, None)

    def fail(self, job: Job, error: BaseException) -> None:
        self._loop.call_soon_threadsafe(_settle, job.future, None, error)

    async def _next_batch(self) -> list[Job]:
        """The first waiting job and whatever queued behind it, up to ``max_batch``; no waiting for more."""
        batch = [await self._queue.get()]
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return [j for j in batch if not j.future.done()]

    async def _run(self) -> None:
        while True:
            # A slot first, then the jobs: while every slot is busy, arrivals queue up and the
            # next batch takes them all.
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            if self.on_batch:
                self.on_batch(batch)
            task = self._loop.run_in_executor(self._executor, self._process, batch)
            self._inflight.add(task)
            task.add_done_callback(self._done)

    def _process(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        try:
            self.process(batch)
        except BaseException as e:  # noqa: BLE001 - a batch failure must reach its callers, not kill the runner
            for job in batch:
                self.fail(job, e)
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * (time.perf_counter() - started)

    def _done(self, task: asyncio.Future) -> None:
        self._inflight.discard(task)
        self._slots.release()


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled by its caller, or already failed
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
