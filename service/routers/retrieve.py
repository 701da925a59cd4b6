"""POST /retrieve: a text query and/or a history in, ranked items with their SIDs out."""

# No `from __future__ import annotations`: FastAPI must see the request model built in router(), not its name.
import asyncio
import time
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response

from service.batching import QueueFull
from service.errors import error_response
from service.routers import BODY_ERRORS, runtime
from service.schemas import ItemOut, RetrieveResponse, retrieve_request_model
from service.settings import Settings
from sidcore.retriever import Query
from sidcore.sid import format_sid


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is already read, so only a disconnect can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def router(s: Settings) -> APIRouter:
    r = APIRouter()
    RetrieveRequest = retrieve_request_model(s)

    @r.post(
        "/retrieve",
        response_model=RetrieveResponse,
        responses={**BODY_ERRORS,
                   422: {"description": "Invalid input (the detail names the field)"},
                   429: {"description": "Queue full; see Retry-After"},
                   503: {"description": "Not ready, or not answered within the timeout; see Retry-After"}},
    )
    async def retrieve(request: Request, body: RetrieveRequest = Body()) -> Any:  # type: ignore[valid-type]
        """Items for a text query, a user history (item ids, newest last), or both."""
        started = time.perf_counter()
        rt = runtime(request)
        query = Query(query=(body.query or "").strip() or None, history=tuple(body.history), k=body.k, beam_width=body.beam_width)
        try:
            future = rt.submit(query)
        except QueueFull:
            rt.metrics.rejected.labels("queue_full").inc()
            raise
        gone = asyncio.ensure_future(_disconnected(request))
        timeout = s.request_timeout_s - (time.perf_counter() - started)
        done, _ = await asyncio.wait({future, gone}, timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if future not in done:
            future.cancel()
            if gone in done:
                rt.metrics.rejected.labels("disconnected").inc()
                return Response(status_code=499)  # nobody reads it; the status keeps the counters honest
            rt.metrics.rejected.labels("timeout").inc()
            return error_response(503, f"not answered within {s.request_timeout_s} s", rt.batcher.retry_after())
        answer = future.result()  # an error raised in the batch (e.g. the index flipped) answers through the error table
        result = answer.result
        rt.observe_result(result)
        out = RetrieveResponse(
            items=[ItemOut(item_id=i.item_id, score=i.score, sid=format_sid(i.sid)) for i in result.items],
            index_version=result.index_version,
            model_version=answer.release.decoder_version,
            release=answer.release.name,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return JSONResponse(out.model_dump())

    return r
