"""GET /metrics (Prometheus) and GET /stats (sliding-window QPS and latency, no Prometheus needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.routers import runtime


def router() -> APIRouter:
    r = APIRouter()

    @r.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        rt = runtime(request)
        rt.refresh()
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @r.get("/stats")
    async def stats(request: Request) -> dict:
        """Sliding-window QPS, p50/p99 latency (ms) and error counts of POST /retrieve."""
        rt = runtime(request)
        rt.refresh()
        facts = rt.describe()
        return {
            **rt.stats.snapshot(),
            "queue_depth": rt.batcher.depth,
            "index_version": facts["index_version"],
            "model_version": facts["model_version"],
            "release": facts["release"],
            "target_release": facts["target_release"],
            "status": rt.readiness().status,
        }

    return r
