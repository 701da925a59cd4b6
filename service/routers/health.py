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
        """Ready to answer: `ready`, or `degraded` when Redis is down and the in-memory index serves."""
        rt = runtime(request)
        rt.refresh()
        ready = rt.readiness()
        state = rt.sync.state()
        body = {
            "status": ready.status,
            "reason": ready.reason,
            "index_version": state.version,
            "model_version": rt.decoder.version,
            "engine": s.engine,
            "redis": {"connected": state.connected, "last_sync": state.last_sync, "last_error": state.last_error},
            "num_sids": state.num_sids,
            "num_items": state.num_items,
        }
        return JSONResponse(body, status_code=200 if ready.ok else 503)

    return r
