"""POST /items: cold-start items into the live index (admin token), retrievable when it returns."""

# No `from __future__ import annotations`: FastAPI must see the request model built in router(), not its name.
import asyncio
import secrets
import time
from typing import Any

from fastapi import APIRouter, Body, Header, Request
from fastapi.responses import JSONResponse

from service.errors import FieldError, error_response
from service.routers import BODY_ERRORS, runtime
from service.runtime import Runtime
from service.schemas import InsertedItem, InsertResponse, insert_request_model
from service.settings import Settings
from sidcore.errors import ConflictError, DataError
from sidcore.sid import format_sid


async def _visible(rt: Runtime, version: str, item_id: str, timeout: float = 5.0) -> None:
    """Wait until the served trie holds the insert, so the caller can retrieve it right away."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        served = rt.follower.served
        trie = served.sync.trie if served else None
        if trie is None or trie.version != version or trie.node_of_item(item_id) >= 0:
            return
        await asyncio.sleep(0.01)


def router(s: Settings) -> APIRouter:
    r = APIRouter()
    InsertRequest = insert_request_model(s)

    @r.post(
        "/items",
        response_model=InsertResponse,
        responses={**BODY_ERRORS, 401: {"description": "Missing or wrong admin token"}, 403: {"description": "Inserts are disabled"},
                   409: {"description": "An item id is already in the index"}, 422: {"description": "Invalid items"},
                   503: {"description": "Redis unreachable"}},
    )
    async def insert_items(request: Request, body: InsertRequest = Body(), authorization: str | None = Header(None)) -> Any:  # type: ignore[valid-type]
        """Insert cold-start items into the live index (admin token required: `Authorization: Bearer <token>`).

        Each item gets the SID the index's frozen quantizer gives it; it is retrievable when this returns.
        """
        rt = runtime(request)
        if s.admin_token is None or rt.insert_items is None:
            return error_response(403, "POST /items is disabled: set SA2CRQ_ADMIN_TOKEN to enable it")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), s.admin_token.get_secret_value().encode()):
            return error_response(401, "missing or wrong admin token (Authorization: Bearer <token>)")
        index = rt.redis_index()
        try:
            result = await asyncio.to_thread(rt.insert_items, index, body.items)
        except ConflictError:
            raise
        except DataError as e:
            raise FieldError(["body", "items"], str(e)) from e
        finally:
            index.close()
        await _visible(rt, result.version, result.items[-1][0])
        inserted = [InsertedItem(item_id=i, sid=format_sid(sid)) for i, sid in result.items]
        rt.metrics.items_inserted.inc(len(inserted))
        return JSONResponse(InsertResponse(index_version=result.version, items=inserted, new_sids=result.new_sids).model_dump())

    return r
