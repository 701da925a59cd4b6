"""GET /v1/items/{item_id} and GET /v1/sids/{sid}: what the served index holds, to explain an answer."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request

from service.errors import FieldError
from service.routers import runtime
from service.routers.access import READ_ERRORS, read_access
from service.schemas import ItemInfo, SidInfo
from service.settings import Settings
from sidcore.errors import DataError, NotFoundError
from sidcore.sid import format_sid, parse_sid


def router(s: Settings) -> APIRouter:
    r = APIRouter(dependencies=read_access(s))
    not_found = {404: {"description": "Not in the served index"}, 503: {"description": "Not ready"}}

    # :path, so ids with a slash in them can be looked up too.
    @r.get("/items/{item_id:path}", response_model=ItemInfo, responses={**READ_ERRORS, **not_found})
    async def item(request: Request, item_id: str = Path(max_length=256)) -> ItemInfo:
        """An item of the served index: its SID, its attributes (from memory) and its stored fields
        (from Redis; null with a warning while Redis is unreachable)."""
        rt = runtime(request)
        snap = rt.snapshot()
        row = int(snap.trie.rows_of([item_id])[0])
        if row < 0:
            raise NotFoundError(f"item {item_id!r} is not in index {snap.version}")
        fields, warnings = None, []
        try:
            (fields,) = await rt.payloads(snap.version, [item_id])
        except rt.redis_errors as e:
            warnings.append(f"stored fields unavailable: Redis unreachable ({e})")
        sid = format_sid(snap.trie.sid_of(int(snap.trie.item_node[row])))
        return ItemInfo(item_id=item_id, sid=sid, index_version=snap.version, attributes=snap.attributes.row(row), fields=fields,
                        warnings=warnings)

    @r.get("/sids/{sid}", response_model=SidInfo, responses={**READ_ERRORS, **not_found, 422: {"description": "Not a SID"}})
    async def sid(request: Request, sid: str = Path(max_length=128, examples=["12-301-7"]),
                  limit: int = Query(1000, ge=1, le=100_000, description="Items listed at most.")) -> SidInfo:
        """A SID of the served index and its items, most popular first."""
        snap = runtime(request).snapshot()
        try:
            codes = parse_sid(sid)
        except DataError as e:
            raise FieldError(["path", "sid"], str(e)) from None
        in_range = len(codes) <= len(snap.trie.sizes) and all(c < m for c, m in zip(codes, snap.trie.sizes))
        node = snap.trie.node_of(codes) if in_range else -1
        if node < 0 or not snap.trie.terminal[node]:
            what = "a prefix of longer SIDs, no SID itself" if node >= 0 else "not a SID"
            raise NotFoundError(f"{sid} is {what} in index {snap.version}")
        items = snap.trie.items_of(node)
        return SidInfo(sid=format_sid(codes), index_version=snap.version, num_items=len(items), items=items[:limit])

    return r
