"""GET /healthz (the process is up) and GET /readyz (it can answer, and from which index)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.routers import runtime
from service.settings import Settings


def router(s: Settings) -> APIRouter:
    r = APIRouter()

    @r.get("/healthz")
    async def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @r.get("/readyz", responses={503: {"description": "Not ready (no index, or one the decoder cannot serve)"}})
    async def readyz(request: Request) -> Response:
        """Ready to answer: `ready`, or `degraded` when Redis is down and the in-memory index serves.

        Also says which release this replica serves, which one it should serve (the active or the
        pinned one: they differ while a new release loads), and why the last load failed, if it did.
        """
        rt = runtime(request)
        rt.refresh()
        ready = rt.readiness()
        body = {"status": ready.status, "reason": ready.reason, "engine": s.engine, **rt.describe()}
        return JSONResponse(body, status_code=200 if ready.ok else 503)

    return r
