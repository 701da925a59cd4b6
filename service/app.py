"""The FastAPI app: POST /retrieve, POST /items, health, readiness, metrics and stats.

Error contract: bad input is a 422 whose ``detail`` lists ``{loc, msg, type}`` naming the field;
a full queue is 429 and a request not answered in time is 503, both with Retry-After; anything
unexpected is a 500 with a generic message (the trace goes to the log, never to the client).
"""

import asyncio
import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import redis
from fastapi import Body, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from indexer.data.catalog import Catalog, DataError
from service.batching import QueueFull
from service.index.coldstart import add_items
from service.retriever import IndexMismatch, Query, UnknownItems
from service.runtime import NotReady, Runtime
from service.schemas import (
    InsertedItem,
    InsertResponse,
    ItemOut,
    RetrieveResponse,
    insert_request_model,
    retrieve_request_model,
)
from service.settings import Settings

log = logging.getLogger("sa2crq.service")


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with 413 before anything parses them (ASGI middleware)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _too_large(self.limit, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(self.limit, send)


class _TooLarge(Exception):
    """Raised inside the app when a streamed body passes the limit."""


async def _too_large(limit: int, send) -> None:
    body = f'{{"detail": "request body exceeds {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class Observe:
    """Counts and times every request, whatever answers it (validation, body limit, endpoint)."""

    def __init__(self, app, runtime: "Runtime", paths: set[str]):
        self.app, self.rt, self.paths = app, runtime, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def sent(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            endpoint = scope["path"] if scope["path"] in self.paths else "other"
            took = time.perf_counter() - started
            self.rt.metrics.requests.labels(endpoint, str(status)).inc()
            self.rt.metrics.latency.labels(endpoint).observe(took)
            if endpoint == "/retrieve":
                self.rt.stats.record(took, status)


def _error(status: int, detail: Any, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _unknown(e: UnknownItems) -> JSONResponse:
    return _error(422, [{"loc": ["body", "history", p], "msg": f"unknown item id {i!r} in index {e.version}", "type": "value_error"}
                        for p, i in zip(e.positions, e.ids)])


def _field_error(loc: list, msg: str) -> JSONResponse:
    return _error(422, [{"loc": loc, "msg": msg, "type": "value_error"}])


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is already read, so only a disconnect can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


BODY_ERRORS = {400: {"description": "The body is not decodable (e.g. not UTF-8)"}, 413: {"description": "The body is too large"}}


def create_app(settings: Settings | None = None) -> FastAPI:
    s = settings or Settings()
    rt = Runtime(s)
    RetrieveRequest = retrieve_request_model(s)
    InsertRequest = insert_request_model(s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await rt.start()
        try:
            yield
        finally:
            await rt.stop()

    app = FastAPI(
        title="SA²CRQ generative retrieval",
        version="0.1.0",
        description="Query and/or history → items, decoded as variable-length semantic IDs under a trie constraint.",
        lifespan=lifespan,
    )
    app.state.runtime = rt

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # The offending input is not echoed back: it can be megabytes.
        return _error(422, [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()])

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal error")

    @app.post(
        "/retrieve",
        response_model=RetrieveResponse,
        responses={**BODY_ERRORS,
                   422: {"description": "Invalid input (the detail names the field)"},
                   429: {"description": "Queue full; see Retry-After"},
                   503: {"description": "Not ready, or not answered within the timeout; see Retry-After"}},
    )
    async def retrieve(request: Request, body: RetrieveRequest = Body()) -> Any:  # type: ignore[valid-type]
        """Items for a text query, a user history (item ids, newest last), or both."""
        return await _retrieve(request, body, time.perf_counter())

    async def _retrieve(request: Request, body, started: float) -> Response:
        query = Query(query=(body.query or "").strip() or None, history=tuple(body.history), k=body.k, beam_width=body.beam_width)
        try:
            future = rt.submit(query)
        except UnknownItems as e:
            return _unknown(e)
        except QueueFull as e:
            rt.metrics.rejected.labels("queue_full").inc()
            return _error(429, str(e), e.retry_after_s)
        except (NotReady, IndexMismatch) as e:
            return _error(503, f"not ready: {e}", 5)
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
            return _error(503, f"not answered within {s.request_timeout_s} s", rt.batcher.retry_after())
        try:
            result = future.result()
        except UnknownItems as e:  # the index flipped between submit and decode
            return _unknown(e)
        except (NotReady, IndexMismatch) as e:
            return _error(503, f"not ready: {e}", 5)
        rt.observe_result(result)
        out = RetrieveResponse(
            items=[ItemOut(item_id=i.item_id, score=i.score, sid="-".join(map(str, i.sid))) for i in result.items],
            index_version=result.index_version,
            model_version=rt.decoder.version,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return JSONResponse(out.model_dump())

    @app.post(
        "/items",
        response_model=InsertResponse,
        responses={**BODY_ERRORS, 401: {"description": "Missing or wrong admin token"}, 403: {"description": "Inserts are disabled"},
                   409: {"description": "An item id is already in the index"}, 422: {"description": "Invalid items"},
                   503: {"description": "Redis unreachable"}},
    )
    async def insert_items(body: InsertRequest = Body(), authorization: str | None = Header(None)) -> Any:  # type: ignore[valid-type]
        """Insert cold-start items into the live index (admin token required: `Authorization: Bearer <token>`).

        Each item gets the SID the index's frozen quantizer gives it; it is retrievable when this returns.
        """
        return await _insert(body, authorization)

    async def _insert(body, authorization: str | None) -> Response:
        if s.admin_token is None:
            return _error(403, "POST /items is disabled: set SA2CRQ_ADMIN_TOKEN to enable it")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), s.admin_token.get_secret_value().encode()):
            return _error(401, "missing or wrong admin token (Authorization: Bearer <token>)")
        items = body.items
        vectors = np.array([i.vector for i in items], dtype=np.float32) if items[0].vector is not None else None
        catalog = Catalog([i.item_id for i in items], [i.title for i in items], np.array([i.popularity for i in items]))
        index = rt.redis_index()
        try:
            result = await asyncio.to_thread(add_items, index, catalog, vectors, None, False)
        except DataError as e:
            if "already in index" in str(e):
                return _error(409, str(e))
            return _field_error(["body", "items"], str(e))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            return _error(503, f"Redis unreachable: {e}", 5)
        finally:
            index.r.close()
        await _visible(result.version, result.items[-1][0])
        inserted = [InsertedItem(item_id=i, sid="-".join(map(str, sid))) for i, sid in result.items]
        rt.metrics.items_inserted.inc(len(inserted))
        return JSONResponse(InsertResponse(index_version=result.version, items=inserted, new_sids=result.new_sids).model_dump())

    async def _visible(version: str, item_id: str, timeout: float = 5.0) -> None:
        """Wait until the served trie holds the insert, so the caller can retrieve it right away."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            trie = rt.sync.trie
            if trie is None or trie.version != version or trie.node_of_item(item_id) >= 0:
                return
            await asyncio.sleep(0.01)

    @app.get("/healthz")
    async def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "Not ready (no index, or one the decoder cannot serve)"}})
    async def readyz() -> Response:
        """Ready to answer: `ready`, or `degraded` when Redis is down and the in-memory index serves."""
        rt.refresh()
        r = rt.readiness()
        state = rt.sync.state() if rt.sync else None
        body = {
            "status": r.status,
            "reason": r.reason,
            "index_version": state.version if state else None,
            "model_version": rt.decoder.version if rt.retriever else None,
            "engine": s.engine,
            "redis": {"connected": state.connected, "last_sync": state.last_sync, "last_error": state.last_error} if state else None,
            "num_sids": state.num_sids if state else 0,
            "num_items": state.num_items if state else 0,
        }
        return JSONResponse(body, status_code=200 if r.ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus metrics."""
        rt.refresh()
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stats")
    async def stats() -> dict:
        """Sliding-window QPS, p50/p99 latency (ms) and error counts of POST /retrieve."""
        rt.refresh()
        state = rt.sync.state() if rt.sync else None
        return {
            **rt.stats.snapshot(),
            "queue_depth": rt.batcher.depth if rt.batcher else 0,
            "index_version": state.version if state else None,
            "model_version": rt.decoder.version if rt.retriever else None,
            "status": rt.readiness().status,
        }

    app.add_middleware(BodyLimit, limit=s.max_body_bytes)
    app.add_middleware(Observe, runtime=rt, paths={r.path for r in app.routes})
    return app
