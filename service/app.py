"""The FastAPI app: middleware, the error table (``service/errors.py``) and one router per
concern (``service/routers/``), all under ``/v1``; the paths of the first API (``/retrieve``,
``/items``, ``/healthz``, ``/readyz``, ``/metrics``, ``/stats``) stay as aliases, left out of the
OpenAPI spec. The runtime opens at startup and closes at shutdown."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError

from service.errors import ERROR_STATUS, crashed, invalid_request, known_error
from service.metrics import Metrics
from service.routers import health, items, lookups, observability, retrieve
from service.runtime import InsertItems, Runtime
from service.settings import Settings


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


API_PREFIX = "/v1"
ALIASES = {"/retrieve", "/items", "/healthz", "/readyz", "/metrics", "/stats"}
"""Paths served before /v1, kept working (same handlers) but not advertised in the spec."""


def endpoint_label(scope, static_paths: set[str]) -> str:
    """The metrics label of a request: its route's template without the /v1 prefix, so an alias
    and its /v1 path count as one endpoint and an item id is never a label. A request answered
    before routing (413) is labelled by its path when that is a route's; anything else is "other"."""
    path = getattr(scope.get("route"), "path", None)
    if path is None:
        path = scope["path"] if scope["path"] in static_paths else "other"
    return path[len(API_PREFIX):] if path.startswith(API_PREFIX + "/") else path


class Observe:
    """Counts and times every request, whatever answers it (validation, body limit, endpoint)."""

    def __init__(self, app, metrics: Metrics, paths: set[str]):
        self.app, self.metrics, self.paths = app, metrics, paths

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
            endpoint = endpoint_label(scope, self.paths)
            took = time.perf_counter() - started
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(took)
            runtime = getattr(scope["app"].state, "runtime", None) if "app" in scope else None
            if endpoint == "/retrieve" and runtime is not None:
                runtime.stats.record(took, status)


def create_app(settings: Settings | None = None, insert_items: InsertItems | None = None) -> FastAPI:
    """The service app; its runtime opens at startup (``app.state.runtime``) and closes at shutdown.

    ``insert_items`` wires cold start (POST /items); see ``service.runtime.InsertItems``.
    """
    s = settings or Settings()
    metrics = Metrics(s.engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.runtime = await Runtime.open(s, metrics, insert_items)
        try:
            yield
        finally:
            await app.state.runtime.close()

    app = FastAPI(
        title="SA²CRQ generative retrieval",
        version="0.1.0",
        description="Query and/or history → items, decoded as variable-length semantic IDs under a trie constraint.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.add_exception_handler(RequestValidationError, invalid_request)
    for error in ERROR_STATUS:
        app.add_exception_handler(error, known_error)
    app.add_exception_handler(Exception, crashed)
    for router in (retrieve.router(s), lookups.router(s), items.router(s), health.router(s), observability.router()):
        app.include_router(router, prefix=API_PREFIX)
        aliases = APIRouter()
        aliases.routes.extend(route for route in router.routes if route.path in ALIASES)
        app.include_router(aliases, include_in_schema=False)
    app.add_middleware(BodyLimit, limit=s.max_body_bytes)
    app.add_middleware(Observe, metrics=metrics, paths={r.path for r in app.routes if "{" not in r.path})
    return app
