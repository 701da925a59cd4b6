"""Errors as HTTP answers: ``ERROR_STATUS`` is the one table from error type to status code.

Bad input is a 422 whose ``detail`` lists ``{loc, msg, type}`` naming the field; a full queue is
429 and a request that cannot be served now is 503, both with Retry-After; anything unexpected is a
500 with a generic message (the trace goes to the log, never to the client).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.batching import QueueFull
from sidcore.errors import ConflictError, DataError, NotFoundError, UnavailableError
from sidcore.index.attributes import FilterError
from sidcore.retriever import UnknownItems

log = logging.getLogger("sa2crq.service")


class FieldError(DataError):
    """Bad input attributed to one field of the body: ``loc`` as in a validation error."""

    def __init__(self, loc: list, msg: str):
        super().__init__(msg)
        self.loc = loc


ERROR_STATUS: dict[type[BaseException], int] = {
    UnknownItems: 422,
    FilterError: 422,
    FieldError: 422,
    DataError: 422,
    ConflictError: 409,
    NotFoundError: 404,
    QueueFull: 429,
    UnavailableError: 503,
    redis.ConnectionError: 503,
    redis.TimeoutError: 503,
}
"""Error type -> HTTP status; the most specific type of an error wins."""

UNAVAILABLE_RETRY_S = 5


def error_response(status: int, detail: Any, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def error_detail(exc: BaseException, body: list | None = None) -> Any:
    """The body of an error answer: field lists for bad input, a sentence otherwise. ``body`` is
    where the request sits (``["body"]``; a batch entry's ``["body", "requests", i]``)."""
    body = ["body"] if body is None else body
    if isinstance(exc, UnknownItems):
        return [{"loc": [*body, "history", p], "msg": f"unknown item id {i!r} in index {exc.version}", "type": "value_error"}
                for p, i in zip(exc.positions, exc.ids)]
    if isinstance(exc, FilterError):
        return [{"loc": [*body, "filter", *exc.path], "msg": str(exc), "type": "value_error"}]
    if isinstance(exc, FieldError):
        return [{"loc": exc.loc, "msg": str(exc), "type": "value_error"}]
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return f"Redis unreachable: {exc}"
    return str(exc)


def retry_after(exc: BaseException) -> int | None:
    if isinstance(exc, QueueFull):
        return exc.retry_after_s
    if isinstance(exc, (UnavailableError, redis.ConnectionError, redis.TimeoutError)):
        return UNAVAILABLE_RETRY_S
    return None


def status_of(exc: BaseException) -> int:
    """The status of the most specific type in ``ERROR_STATUS`` that ``exc`` is, else 500."""
    return next((ERROR_STATUS[cls] for cls in type(exc).__mro__ if cls in ERROR_STATUS), 500)


async def known_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(status_of(exc), error_detail(exc), retry_after(exc))


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # The offending input is not echoed back: it can be megabytes.
    return error_response(422, [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()])


async def crashed(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return error_response(500, "internal error")
