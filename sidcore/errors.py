"""The project's errors, by kind. Callers map a kind to an answer in one place: the CLI exits 2 on
``DataError`` (and its kinds), the HTTP app keeps one table from error type to status code.

    SA2CRQError
    ├── DataError          bad input: a file, a field, a value (CLI exit 2, HTTP 422)
    │   ├── ConflictError  it exists already: an item id, a version being published (HTTP 409)
    │   └── NotFoundError  no such version, item or SID (HTTP 404)
    └── UnavailableError   cannot serve it right now: no index yet, Redis down (HTTP 503)
"""

from __future__ import annotations


class SA2CRQError(Exception):
    """Base of every error the project raises on purpose."""


class DataError(SA2CRQError, ValueError):
    """Bad user input: a missing file, a malformed line, an empty catalog, bad vectors, a bad value."""


class ConflictError(DataError):
    """The thing already exists (an item id in the index, a version another process is publishing)."""


class NotFoundError(DataError, LookupError):
    """No such version, item or SID."""


class UnavailableError(SA2CRQError):
    """Not servable now (no index published yet, an index the decoder cannot decode, Redis unreachable)."""
