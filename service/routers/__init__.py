"""One router per concern: ``retrieve`` (POST /retrieve, /retrieve/batch), ``lookups`` (GET
/items/{id}, /sids/{sid}), ``items`` (admin: POST /items, cold start; POST /attributes),
``health`` (/healthz, /readyz), ``observability`` (/metrics, /stats); the app mounts them under
``/v1``. ``access`` holds the API-key and admin-token checks. Handlers reach the running service
through ``runtime(request)``; errors they raise become answers through ``service.errors``."""

from __future__ import annotations

from fastapi import Request

from service.runtime import Runtime


def runtime(request: Request) -> Runtime:
    """The app's runtime (opened at startup, so every request finds it)."""
    return request.app.state.runtime


BODY_ERRORS = {400: {"description": "The body is not decodable (e.g. not UTF-8)"}, 413: {"description": "The body is too large"}}
