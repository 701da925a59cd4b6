"""A Python client of the sa2crq service: ``Client`` (sync) and ``AsyncClient``, with typed answers.

    from sa2crq.client import Client, request

    with Client("http://127.0.0.1:8000") as sa2crq:
        answer = sa2crq.retrieve(history=["1042", "77"], k=5, fields=["title"],
                                 filter={"must": [{"field": "available", "value": True}]})
        for item in answer.items:
            print(item.item_id, item.score, item.fields["title"])
        results = sa2crq.retrieve_batch([request(query="racing wheel"), request(history=["3120"], k=3)])

Answers are the service's own response models (``service.schemas``: ``RetrieveResponse``,
``BatchEntry``, ``ItemInfo``, ``SidInfo``, ...). A 429 (queue full) or 503 (not ready, timed out)
is retried after the answer's Retry-After (else after 0.5, 1, 2, ... s), at most ``retries``
times, and never for longer than ``max_retry_wait_s`` at once; any other error, or the last
429/503, raises ``ServiceError`` with the status and the service's ``detail``. The read routes
send ``api_key`` as X-API-Key when given; the admin calls need ``admin_token``.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime
from typing import Any, Iterable, Mapping, Sequence, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from service.schemas import (
    AttributesResponse,
    BatchEntry,
    Filter,
    InsertResponse,
    ItemInfo,
    RetrieveBatchResponse,
    RetrieveResponse,
    SidInfo,
)

__all__ = ["AsyncClient", "Client", "ServiceError", "request"]

M = TypeVar("M", bound=BaseModel)
RETRIED = (429, 503)


class ServiceError(Exception):
    """An error answer: ``status``, the service's ``detail`` (a message, or a list of
    ``{loc, msg, type}`` naming the fields), and ``retry_after`` (seconds) when it said one."""

    def __init__(self, status: int, detail: Any, retry_after: float | None = None):
        self.status, self.detail, self.retry_after = status, detail, retry_after
        super().__init__(f"HTTP {status}: {detail}")


def request(
    query: str | None = None,
    history: Sequence[str] = (),
    k: int = 10,
    *,
    beam_width: int | None = None,
    exclude_history: bool = True,
    exclude_ids: Iterable[str] = (),
    filter: Filter | Mapping[str, Any] | None = None,
    fields: Sequence[str] | None = None,
) -> dict:
    """The JSON body of one retrieve request (what ``retrieve`` sends; a ``retrieve_batch`` entry)."""
    body: dict[str, Any] = {"k": k}
    if query is not None:
        body["query"] = query
    if history:
        body["history"] = [str(i) for i in history]
    if beam_width is not None:
        body["beam_width"] = beam_width
    if not exclude_history:
        body["exclude_history"] = False
    if exclude_ids := list(exclude_ids):
        body["exclude_ids"] = exclude_ids
    if filter is not None:
        body["filter"] = filter.model_dump(exclude_none=True) if isinstance(filter, BaseModel) else dict(filter)
    if fields is not None:
        body["fields"] = list(fields)
    return body


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (a number of seconds or an HTTP date), None if absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class _Base:
    def __init__(self, base_url: str, api_key: str | None, admin_token: str | None, retries: int, max_retry_wait_s: float):
        if retries < 0 or max_retry_wait_s < 0:
            raise ValueError("retries and max_retry_wait_s must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.max_retry_wait_s = max_retry_wait_s
        self.retried = 0  # retries made so far, by this client
        self._read = {"X-API-Key": api_key} if api_key else {}
        self._admin = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}

    def _wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``response``, or None to give it to the caller."""
        if response.status_code not in RETRIED or attempt >= self.retries:
            return None
        wait = _retry_after(response)
        wait = min(0.5 * 2**attempt, self.max_retry_wait_s) if wait is None else wait
        return wait if wait <= self.max_retry_wait_s else None

    @staticmethod
    def _parse(response: httpx.Response, model: type[M]) -> M:
        if response.is_success:
            return model.model_validate(response.json())
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise ServiceError(response.status_code, detail, _retry_after(response))


class Client(_Base):
    """A blocking client; a context manager (``close`` releases its connections).

    Args:
        base_url: the service, e.g. ``http://127.0.0.1:8000``.
        api_key: sent as X-API-Key (when the service sets ``SA2CRQ_API_KEY``).
        admin_token: the bearer token of ``set_attributes`` and ``insert_items``.
        timeout: seconds per HTTP call.
        retries: retries of a 429/503 answer at most (0: none).
        max_retry_wait_s: a Retry-After longer than this is not waited for: the error is raised.
        transport: an ``httpx`` transport (e.g. ASGI, for an app in the same process).
    """

    def __init__(self, base_url: str, api_key: str | None = None, admin_token: str | None = None, timeout: float = 30.0,
                 retries: int = 3, max_retry_wait_s: float = 30.0, transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, api_key, admin_token, retries, max_retry_wait_s)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, model: type[M], headers: dict, **kwargs) -> M:
        attempt = 0
        while True:
            response = self._http.request(method, path, headers=headers, **kwargs)
            wait = self._wait(response, attempt)
            if wait is None:
                return self._parse(response, model)
            attempt += 1
            self.retried += 1
            time.sleep(wait)

    def retrieve(self, query: str | None = None, history: Sequence[str] = (), k: int = 10, **options) -> RetrieveResponse:
        """POST /v1/retrieve; ``options`` as ``request`` takes them (beam_width, exclude_history,
        exclude_ids, filter, fields)."""
        return self._call("POST", "/v1/retrieve", RetrieveResponse, self._read, json=request(query, history, k, **options))

    def retrieve_batch(self, requests: Sequence[Mapping[str, Any]]) -> list[BatchEntry]:
        """POST /v1/retrieve/batch: one ``BatchEntry`` per request, in order (build them with ``request``)."""
        return self._call("POST", "/v1/retrieve/batch", RetrieveBatchResponse, self._read, json={"requests": list(requests)}).results

    def item(self, item_id: str) -> ItemInfo:
        """GET /v1/items/{item_id}: its SID, attributes and stored fields."""
        return self._call("GET", f"/v1/items/{quote(item_id, safe='')}", ItemInfo, self._read)

    def sid(self, sid: str, limit: int = 1000) -> SidInfo:
        """GET /v1/sids/{sid}: its items, most popular first."""
        return self._call("GET", f"/v1/sids/{quote(sid, safe='')}", SidInfo, self._read, params={"limit": limit})

    def set_attributes(self, updates: Mapping[str, Mapping[str, Any]]) -> AttributesResponse:
        """POST /v1/attributes (admin): ``{item_id: {attribute: value or None to clear}}``."""
        body = {"items": [{"item_id": i, "attributes": dict(a)} for i, a in updates.items()]}
        return self._call("POST", "/v1/attributes", AttributesResponse, self._admin, json=body)

    def insert_items(self, items: Sequence[Mapping[str, Any]]) -> InsertResponse:
        """POST /v1/items (admin): cold-start items ``{item_id, title, popularity?, vector?}``."""
        return self._call("POST", "/v1/items", InsertResponse, self._admin, json={"items": list(items)})

    def ready(self) -> dict:
        """GET /v1/readyz as a dict (its status is also in ``["status"]``; a 503 is not raised)."""
        return self._http.get("/v1/readyz").json()

    def stats(self) -> dict:
        """GET /v1/stats: sliding-window QPS, p50/p99 and errors of the retrieve route."""
        return self._http.get("/v1/stats").json()


class AsyncClient(_Base):
    """``Client``'s twin for asyncio: the same methods, awaited (``async with AsyncClient(url) as c``)."""

    def __init__(self, base_url: str, api_key: str | None = None, admin_token: str | None = None, timeout: float = 30.0,
                 retries: int = 3, max_retry_wait_s: float = 30.0, transport: httpx.AsyncBaseTransport | None = None,
                 limits: httpx.Limits | None = None):
        super().__init__(base_url, api_key, admin_token, retries, max_retry_wait_s)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport, limits=limits or httpx.Limits())

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, model: type[M], headers: dict, **kwargs) -> M:
        attempt = 0
        while True:
            response = await self._http.request(method, path, headers=headers, **kwargs)
            wait = self._wait(response, attempt)
            if wait is None:
                return self._parse(response, model)
            attempt += 1
            self.retried += 1
            await asyncio.sleep(wait)

    async def retrieve(self, query: str | None = None, history: Sequence[str] = (), k: int = 10, **options) -> RetrieveResponse:
        return await self._call("POST", "/v1/retrieve", RetrieveResponse, self._read, json=request(query, history, k, **options))

    async def retrieve_batch(self, requests: Sequence[Mapping[str, Any]]) -> list[BatchEntry]:
        answer = await self._call("POST", "/v1/retrieve/batch", RetrieveBatchResponse, self._read, json={"requests": list(requests)})
        return answer.results

    async def item(self, item_id: str) -> ItemInfo:
        return await self._call("GET", f"/v1/items/{quote(item_id, safe='')}", ItemInfo, self._read)

    async def sid(self, sid: str, limit: int = 1000) -> SidInfo:
        return await self._call("GET", f"/v1/sids/{quote(sid, safe='')}", SidInfo, self._read, params={"limit": limit})

    async def set_attributes(self, updates: Mapping[str, Mapping[str, Any]]) -> AttributesResponse:
        body = {"items": [{"item_id": i, "attributes": dict(a)} for i, a in updates.items()]}
        return await self._call("POST", "/v1/attributes", AttributesResponse, self._admin, json=body)

    async def insert_items(self, items: Sequence[Mapping[str, Any]]) -> InsertResponse:
        return await self._call("POST", "/v1/items", InsertResponse, self._admin, json={"items": list(items)})

    async def ready(self) -> dict:
        return (await self._http.get("/v1/readyz")).json()

    async def stats(self) -> dict:
        return (await self._http.get("/v1/stats")).json()
