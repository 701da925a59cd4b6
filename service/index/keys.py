"""The Redis key layout of the index, in one place.

    sa2crq:active                      string: id of the version the service serves
    sa2crq:versions                    set: every version that has (or had) keys, complete or not
    sa2crq:events                      pub/sub channel: JSON {"type": "activate" | "insert", ...}
    sa2crq:{V}:meta                    hash: method, sizes, num_sids, num_items, published, ...
    sa2crq:{V}:sid                     hash: SID "12-301-7" -> JSON list of item ids, most popular first
    sa2crq:{V}:item                    hash: item id -> SID
    sa2crq:{V}:snapshot                hash: segment number -> npz bytes of the published SID table
    sa2crq:{V}:files                   hash: quantizer.json / quantizer.safetensors -> bytes
    sa2crq:{V}:log                     stream: one entry per cold-start insert batch (items, SIDs)
    sa2crq:{V}:lease                   string with TTL: held while a publisher writes V
    sa2crq:{V}:complete                string: written last, after every count was verified

``{V}`` is a Redis Cluster hash tag, so one version's keys share a slot and the scripts that
touch several of them (publish finalisation, inserts) stay single-slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from indexer.data.catalog import DataError

ACTIVE = "sa2crq:active"
VERSIONS = "sa2crq:versions"
CHANNEL = "sa2crq:events"

# Store version ids look like index-20250101T120000-a1b2c3; refusing anything else keeps ids free of
# hash-tag braces and SCAN glob characters.
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class VersionKeys:
    version: str

    def __post_init__(self) -> None:
        if not _VERSION_RE.fullmatch(self.version):
            raise DataError(f"not a valid index version id: {self.version!r}")

    @property
    def namespace(self) -> str:
        return f"sa2crq:{{{self.version}}}"

    @property
    def pattern(self) -> str:
        return f"{self.namespace}:*"

    @property
    def meta(self) -> str:
        return f"{self.namespace}:meta"

    @property
    def sid(self) -> str:
        return f"{self.namespace}:sid"

    @property
    def item(self) -> str:
        return f"{self.namespace}:item"

    @property
    def snapshot(self) -> str:
        return f"{self.namespace}:snapshot"

    @property
    def files(self) -> str:
        return f"{self.namespace}:files"

    @property
    def log(self) -> str:
        return f"{self.namespace}:log"

    @property
    def lease(self) -> str:
        return f"{self.namespace}:lease"

    @property
    def complete(self) -> str:
        return f"{self.namespace}:complete"
