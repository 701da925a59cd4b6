"""Who may call what: an optional API key on the read routes, a bearer token on the admin routes.

Both go through FastAPI's security classes, so the OpenAPI spec shows the schemes (``X-API-Key``
header, HTTP bearer) on the operations that need them. The API key is declared only when one is
configured: an open service's spec must not claim a key it does not ask for.
"""

from __future__ import annotations

import secrets

from fastapi import Depends, HTTPException, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.settings import Settings

_bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken", description="`Authorization: Bearer $SA2CRQ_ADMIN_TOKEN`")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey", description="`X-API-Key: $SA2CRQ_API_KEY`")

ADMIN_ERRORS = {401: {"description": "Missing or wrong admin token"}, 403: {"description": "Admin routes are disabled (no token configured)"}}
READ_ERRORS = {401: {"description": "Missing or wrong API key"}}


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def read_access(s: Settings) -> list[DependsParam]:
    """Dependencies of the read routes: the API key check when ``SA2CRQ_API_KEY`` is set, else none."""
    if s.api_key is None:
        return []
    expected = s.api_key.get_secret_value()

    async def api_key(key: str | None = Security(_api_key)) -> None:
        if key is None or not _same(key, expected):
            raise HTTPException(401, "missing or wrong API key (header X-API-Key)")

    return [Depends(api_key)]


def admin_access(s: Settings) -> list[DependsParam]:
    """Dependencies of the admin routes: 403 while no admin token is configured, 401 for a
    missing or wrong one."""

    async def admin(credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> None:
        if s.admin_token is None:
            raise HTTPException(403, "admin routes are disabled: set SA2CRQ_ADMIN_TOKEN to enable them")
        if credentials is None or not _same(credentials.credentials, s.admin_token.get_secret_value()):
            raise HTTPException(401, "missing or wrong admin token (Authorization: Bearer <token>)", headers={"WWW-Authenticate": "Bearer"})

    return [Depends(admin)]
