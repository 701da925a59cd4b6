"""sa2crq.client against the real service: typed answers, and 429s retried after their Retry-After
(a service with a queue of one, kept full by other callers), a bounded number of times."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from sa2crq.client import AsyncClient, Client, ServiceError, request
from service.schemas import RetrieveResponse

HEAVY = {"k": 32, "beam_width": 32}


@pytest.fixture(scope="module")
def crowded(start_service):
    """A service whose queue holds one request, and three callers keeping it busy while in use
    (with short pauses, so that a caller who waits its Retry-After finds room again)."""
    svc = start_service(queue_size=1, max_batch=1)

    @contextmanager
    def crowd():
        stop = threading.Event()

        def hammer():
            with httpx.Client(base_url=svc.url, timeout=30) as h:
                while not stop.is_set():
                    h.post("/v1/retrieve", json={"query": "crowd", **HEAVY})
                    stop.wait(0.03)

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            yield svc
        finally:
            stop.set()
            for t in threads:
                t.join(30)

    return crowd


def test_answers_are_typed(live_service, tiny_stack):
    with Client(live_service.url) as c:
        answer = c.retrieve(query=tiny_stack.catalog.texts[0], k=4, fields=["title"])
        assert isinstance(answer, RetrieveResponse) and len(answer.items) == 4 and answer.items[0].fields["title"]
        with pytest.raises(ServiceError) as e:
            c.retrieve(history=["no-such-item"])
        assert e.value.status == 422 and e.value.detail[0]["loc"] == ["body", "history", 0]


def test_429s_are_retried_after_their_retry_after(crowded):
    with crowded() as svc, Client(svc.url, retries=10) as c:
        deadline = time.monotonic() + 60
        while c.retried == 0:
            assert time.monotonic() < deadline, "no 429 met in 60 s"
            before = c.retried
            started = time.perf_counter()
            answer = c.retrieve(query="mine", **HEAVY)
            took = time.perf_counter() - started
            assert len(answer.items) == 32
            assert took >= (c.retried - before) * 1.0  # the service says Retry-After: 1 (or more)


def test_retries_are_bounded(crowded):
    with crowded() as svc, Client(svc.url, retries=0) as c:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "no 429 met in 60 s"
            try:
                c.retrieve(query="mine", **HEAVY)
            except ServiceError as e:
                assert e.status == 429 and e.retry_after >= 1 and c.retried == 0
                break
    with Client(svc.url, retries=3, max_retry_wait_s=0.5) as patient_but_not_that_much:
        # a Retry-After of 1 s is longer than it waits: the 429 is raised at once
        with crowded():
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline
                try:
                    patient_but_not_that_much.retrieve(query="mine", **HEAVY)
                except ServiceError as e:
                    assert e.status == 429 and patient_but_not_that_much.retried == 0
                    break


def test_the_async_client_retries_too(crowded):
    async def scenario(url):
        # Concurrent calls that wait out the same Retry-After wake together and compete for the one
        # queue slot with each other and the crowd: two of them, and room for 30 retries each (10
        # ran out once on a loaded 2-core CI machine).
        async with AsyncClient(url, retries=30) as c:
            deadline = time.monotonic() + 60
            while c.retried == 0:
                assert time.monotonic() < deadline
                answers = await asyncio.gather(*(c.retrieve(query=f"mine {i}", **HEAVY) for i in range(2)))
                assert all(len(a.items) == 32 for a in answers)
            batch = await c.retrieve_batch([request(query="a", k=2)])  # the batch limit is the queue's size, 1 here
            return [len(e.response.items) for e in batch]

    with crowded() as svc:
        assert asyncio.run(scenario(svc.url)) == [2]


def test_503_and_http_date_retry_after():
    """The retry policy on canned answers (the live 503s take seconds to provoke)."""
    calls = []

    def answer(req: httpx.Request) -> httpx.Response:
        calls.append(time.perf_counter())
        if len(calls) == 1:
            when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=1), usegmt=True)
            return httpx.Response(503, json={"detail": "not ready"}, headers={"Retry-After": when})
        if len(calls) == 2:
            return httpx.Response(429, json={"detail": "queue is full"})  # no Retry-After: back off 1 s (0.5 * 2)
        return httpx.Response(200, json={"items": [], "index_version": "v", "model_version": "m", "release": "r", "took_ms": 1.0})

    with Client("http://service", retries=2, transport=httpx.MockTransport(answer)) as c:
        assert c.retrieve(query="x").items == [] and c.retried == 2
    assert calls[1] - calls[0] >= 0.0 and calls[2] - calls[1] >= 0.9
    calls.clear()
    with Client("http://service", retries=1, transport=httpx.MockTransport(answer)) as c:
        with pytest.raises(ServiceError) as e:
            c.retrieve(query="x")
        assert e.value.status == 429 and c.retried == 1
