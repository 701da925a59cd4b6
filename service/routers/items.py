"""Admin routes (bearer token): POST /v1/items (cold-start items into the live index) and
POST /v1/attributes (set item attributes in place); both are visible to this replica when they return."""

# No `from __future__ import annotations`: FastAPI must see the request models built in router(), not their names.
import asyncio
import time
from typing import Any, Callable

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from service.errors import FieldError, error_response
from service.routers import BODY_ERRORS, runtime
from service.routers.access import ADMIN_ERRORS, admin_access
from service.runtime import Runtime
from service.schemas import AttributesResponse, InsertedItem, InsertResponse, attributes_request_model, insert_request_model
from service.settings import Settings
from sidcore.errors import ConflictError, DataError, NotFoundError
from sidcore.sid import format_sid


async def _visible(rt: Runtime, version: str, seen: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until this replica's snapshot shows a write (``seen``), so the caller can use it right away."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        served = rt.follower.served
        snap = served.sync.snapshot if served else None
        if snap is None or snap.version != version or seen():
            return
        await asyncio.sleep(0.01)


def router(s: Settings) -> APIRouter:
    r = APIRouter(dependencies=admin_access(s))
    InsertRequest = insert_request_model(s)
    AttributesRequest = attributes_request_model(s)

    @r.post(
        "/items",
        response_model=InsertResponse,
        responses={**BODY_ERRORS, **ADMIN_ERRORS, 409: {"description": "An item id is already in the index"},
                   422: {"description": "Invalid items"}, 503: {"description": "Redis unreachable"}},
    )
    async def insert_items(request: Request, body: InsertRequest = Body()) -> Any:  # type: ignore[valid-type]
        """Insert cold-start items into the live index (admin token required: `Authorization: Bearer <token>`).

        Each item gets the SID the index's frozen quantizer gives it, and no attribute values (set them
        with POST /v1/attributes); it is retrievable when this returns.
        """
        rt = runtime(request)
        if rt.insert_items is None:
            return error_response(403, "POST /v1/items is disabled: this service was started without cold start")
        index = rt.redis_index()
        try:
            result = await asyncio.to_thread(rt.insert_items, index, body.items)
        except ConflictError:
            raise
        except DataError as e:
            raise FieldError(["body", "items"], str(e)) from e
        finally:
            index.close()
        last = result.items[-1][0]
        await _visible(rt, result.version, lambda: rt.served().sync.snapshot.trie.node_of_item(last) >= 0)
        inserted = [InsertedItem(item_id=i, sid=format_sid(sid)) for i, sid in result.items]
        rt.metrics.items_inserted.inc(len(inserted))
        return JSONResponse(InsertResponse(index_version=result.version, items=inserted, new_sids=result.new_sids).model_dump())

    @r.post(
        "/attributes",
        response_model=AttributesResponse,
        responses={**BODY_ERRORS, **ADMIN_ERRORS, 404: {"description": "An item is not in the index"},
                   422: {"description": "An attribute the index does not declare, or a value of the wrong kind"},
                   503: {"description": "Redis unreachable"}},
    )
    async def set_attributes(request: Request, body: AttributesRequest = Body()) -> Any:  # type: ignore[valid-type]
        """Set attributes of items of the active index in place, without a rebuild (availability, price):
        `{"items": [{"item_id": "1042", "attributes": {"available": false, "price": 19.9}}]}`; null clears a value.

        All or nothing: an unknown item, attribute or a value of the wrong kind refuses the call.
        Replicas follow through the version's log; this one shows the change when the call returns.
        """
        rt = runtime(request)
        version = rt.snapshot().version
        updates = [(u.item_id, dict(u.attributes)) for u in body.items]
        index = rt.redis_index()
        try:
            result = await asyncio.to_thread(index.set_attributes, version, updates)
        except NotFoundError:
            raise
        except DataError as e:
            raise FieldError(["body", "items"], str(e)) from e
        finally:
            index.close()
        # The sync applies log entries in order: the snapshot is current once it holds the last one.
        await _visible(rt, result.version, lambda: rt.served().sync.has_applied(result.version, result.log_id))
        return JSONResponse(AttributesResponse(index_version=result.version, updated=result.items, log_id=result.log_id).model_dump())

    return r
