"""POST /v1/retrieve (a text query and/or a history in, ranked items with their SIDs out) and
POST /v1/retrieve/batch (many such requests in one call, answered in order, each with its own status)."""

# No `from __future__ import annotations`: FastAPI must see the request models built in router(), not their names.
import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, TypeAdapter, ValidationError

from service import schemas
from service.batching import QueueFull
from service.errors import FieldError, error_detail, error_response, retry_after, status_of
from service.routers import BODY_ERRORS, runtime
from service.routers.access import READ_ERRORS, read_access
from service.runtime import Answer, Runtime
from service.schemas import (
    BatchEntry,
    ItemOut,
    RetrieveBatchResponse,
    RetrieveResponse,
    batch_request_model,
    retrieve_request_model,
)
from service.settings import Settings
from sidcore.index.attributes import Condition, Filter
from sidcore.index.snapshot import IndexSnapshot
from sidcore.retriever import Query, Result
from sidcore.sid import format_sid

log = logging.getLogger("sa2crq.service")


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is already read, so only a disconnect can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def core_filter(flt: schemas.Filter) -> Filter:
    def condition(c: schemas.Condition) -> Condition:
        if c.range is not None:
            return Condition(c.field, "range", bounds=c.range.bounds())
        if c.any is not None:
            return Condition(c.field, "any", tuple(c.any))
        return Condition(c.field, "eq", (c.value,))

    return Filter(tuple(map(condition, flt.must)), tuple(map(condition, flt.must_not)))


def to_query(body: BaseModel, rt: Runtime, snap: IndexSnapshot, at: list) -> Query:
    """The core request of a validated body, checked against the served index (errors name
    fields under ``at``, where the request sits in the HTTP body)."""
    flt = core_filter(body.filter) if body.filter is not None else None
    query = Query(
        query=(body.query or "").strip() or None, history=tuple(body.history), k=body.k, beam_width=body.beam_width,
        exclude_history=body.exclude_history, exclude_ids=tuple(body.exclude_ids), filter=flt or None,
    )  # fmt: skip
    for j, name in enumerate(body.fields or ()):
        if name not in snap.fields:
            stored = ", ".join(snap.fields) or "none"
            raise FieldError([*at, "fields", j], f"index {snap.version} stores no field {name!r}; it stores: {stored}")
    rt.validate(snap, query)
    return query


async def _stored_fields(rt: Runtime, results: list[tuple[Result, list[str] | None]]) -> tuple[dict, list[str]]:
    """{(version, item id): fields} for the results that asked for fields, and warnings."""
    wanted: dict[str, set[str]] = {}
    for result, fields in results:
        if fields:
            wanted.setdefault(result.index_version, set()).update(i.item_id for i in result.items)
    found: dict = {}
    warnings: list[str] = []
    for version, ids in wanted.items():
        ordered = sorted(ids)
        try:
            payloads = await rt.payloads(version, ordered)
        except rt.redis_errors as e:
            warnings.append(f"stored fields unavailable: Redis unreachable ({e})")
            continue
        found.update(((version, i), p) for i, p in zip(ordered, payloads))
    return found, warnings


def _answer(answer: Answer, fields: list[str] | None, stored: dict, warnings: list[str], started: float) -> RetrieveResponse:
    result = answer.result
    items = []
    for i in result.items:
        item = dict(item_id=i.item_id, score=i.score, sid=format_sid(i.sid))
        if fields:
            payload = stored.get((result.index_version, i.item_id))
            item["fields"] = None if payload is None else {f: payload[f] for f in fields if f in payload}
        items.append(ItemOut(**item))
    return RetrieveResponse(
        items=items, index_version=result.index_version, model_version=answer.release.decoder_version, release=answer.release.name,
        took_ms=round((time.perf_counter() - started) * 1000, 3), reason=result.reason, warnings=warnings if fields else [],
    )  # fmt: skip


def _dump(answer: BaseModel) -> dict:
    # exclude_unset: an item carries "fields" only when the request asked for them.
    return answer.model_dump(exclude_unset=True)


def router(s: Settings) -> APIRouter:
    r = APIRouter(dependencies=read_access(s))
    RetrieveRequest = retrieve_request_model(s)
    BatchRequest = batch_request_model(s)
    entry = TypeAdapter(RetrieveRequest)
    busy = {429: {"description": "Queue full; see Retry-After"},
            503: {"description": "Not ready, or not answered within the timeout; see Retry-After"}}

    async def wait(request: Request, rt: Runtime, futures: list[asyncio.Future], started: float) -> set | Response:
        """Wait for the answers until the timeout: the futures still unanswered then (cancelled,
        so the batcher skips them), or a 499 Response when the client went away first."""
        gone = asyncio.ensure_future(_disconnected(request))
        everything = asyncio.gather(*futures, return_exceptions=True)
        timeout = max(s.request_timeout_s - (time.perf_counter() - started), 0)
        done, _ = await asyncio.wait({everything, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if everything in done:
            return set()
        late = {f for f in futures if not f.done()}
        everything.cancel()  # cancels the unanswered ones
        if gone in done:
            rt.metrics.rejected.labels("disconnected").inc()
            return Response(status_code=499)  # nobody reads it; the status keeps the counters honest
        rt.metrics.rejected.labels("timeout").inc(len(late))
        return late

    def submit(rt: Runtime, queries: list[Query], snap: IndexSnapshot) -> list[asyncio.Future]:
        try:
            return rt.submit_many(queries, snap)
        except QueueFull:
            rt.metrics.rejected.labels("queue_full").inc()
            raise

    @r.post("/retrieve", response_model=RetrieveResponse,
            responses={**BODY_ERRORS, **READ_ERRORS, 422: {"description": "Invalid input (the detail names the field)"}, **busy})
    async def retrieve(request: Request, body: RetrieveRequest = Body()) -> Any:  # type: ignore[valid-type]
        """Items for a text query, a user history (item ids, newest last), or both; without the
        history's items (unless `exclude_history` is false), `exclude_ids`, and items `filter` drops."""
        started = time.perf_counter()
        rt = runtime(request)
        snap = rt.snapshot()
        query = to_query(body, rt, snap, ["body"])
        (future,) = submit(rt, [query], snap)
        late = await wait(request, rt, [future], started)
        if isinstance(late, Response):
            return late
        if late:
            return error_response(503, f"not answered within {s.request_timeout_s} s", rt.batcher.retry_after())
        answer = future.result()  # an error raised in the batch (e.g. the index flipped) answers through the error table
        result = answer.result
        rt.observe_result(result)
        stored, warnings = await _stored_fields(rt, [(result, body.fields)])
        return JSONResponse(_dump(_answer(answer, body.fields, stored, warnings, started)))

    @r.post("/retrieve/batch", response_model=RetrieveBatchResponse,
            responses={**BODY_ERRORS, **READ_ERRORS, 422: {"description": "The body is not a list of requests, or too long a one"}, **busy})
    async def retrieve_batch(request: Request, body: BatchRequest = Body()) -> Any:  # type: ignore[valid-type]
        """Many retrieve requests in one call. All are queued together, so they share engine
        batches; `results` answers them in order, each with the status `/v1/retrieve` would have
        given it (200 with `response`, else `detail`): one bad entry does not fail the others. The
        whole call gets 429 when the queue cannot take all its valid entries."""
        started = time.perf_counter()
        rt = runtime(request)
        snap = rt.snapshot()
        results: list[BatchEntry | None] = [None] * len(body.requests)
        parsed: dict[int, Any] = {}
        queries: dict[int, Query] = {}
        for i, raw in enumerate(body.requests):
            at = ["body", "requests", i]
            try:
                parsed[i] = entry.validate_python(raw)
                queries[i] = to_query(parsed[i], rt, snap, at)
            except ValidationError as e:
                detail = [{"loc": [*at, *err["loc"]], "msg": err["msg"], "type": err["type"]} for err in e.errors()]
                results[i] = BatchEntry(status=422, detail=detail)
            except Exception as e:  # noqa: BLE001 - answered per entry through the error table; a bug is still a 500 there
                results[i] = _entry_error(e, at)
        order = list(queries)
        futures = submit(rt, [queries[i] for i in order], snap) if order else []
        late = await wait(request, rt, futures, started)
        if isinstance(late, Response):
            return late
        done: list[tuple[int, Answer]] = []
        for i, f in zip(order, futures):
            if f in late:
                results[i] = BatchEntry(status=503, detail=f"not answered within {s.request_timeout_s} s")
            elif f.exception() is not None:
                results[i] = _entry_error(f.exception(), ["body", "requests", i])
            else:
                done.append((i, f.result()))
                rt.observe_result(f.result().result)
        stored, warnings = await _stored_fields(rt, [(a.result, parsed[i].fields) for i, a in done])
        for i, a in done:
            results[i] = BatchEntry(status=200, response=_answer(a, parsed[i].fields, stored, warnings, started))
        answer = RetrieveBatchResponse(results=results, took_ms=round((time.perf_counter() - started) * 1000, 3))
        return JSONResponse(_dump(answer))

    return r


def _entry_error(exc: BaseException, at: list) -> BatchEntry:
    """An entry's answer to an error, as the error table would give it to a single request."""
    status = status_of(exc)
    if status == 500:
        log.error("unhandled error in a batch entry", exc_info=exc)
        return BatchEntry(status=500, detail="internal error")
    wait_s = retry_after(exc)
    if wait_s is None:
        return BatchEntry(status=status, detail=error_detail(exc, at))
    return BatchEntry(status=status, detail=error_detail(exc, at), retry_after=wait_s)
