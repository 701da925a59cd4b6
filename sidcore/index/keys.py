"""The Redis key layout of the index, in one place (``P`` is the prefix, ``sa2crq`` by default).

    P:active                      string: id of the version the service serves
    P:versions                    set: every version that has (or had) keys, complete or not
    P:events                      pub/sub channel: JSON {"type": "activate" | "insert" | "attributes", ...}
    P:{V}:meta                    hash: method, sizes, num_sids, num_items, attributes, fields, published, ...
    P:{V}:sid                     hash: SID "12-301-7" -> JSON list of item ids, most popular first
    P:{V}:item                    hash: item id -> SID
    P:{V}:snapshot                hash: segment number -> npz bytes of the published SID table
    P:{V}:files                   hash: quantizer.json / quantizer.safetensors -> bytes
    P:{V}:log                     stream: cold-start insert batches and attribute updates, in order
    P:{V}:inserted                hash: cold-start item id -> JSON {title, popularity, vector?} (carried to later releases)
    P:{V}:payload                 hash: item id -> JSON object of its stored fields (title, ...)
    P:{V}:attrs                   hash: attribute name -> kind (categorical | numeric | boolean)
    P:{V}:attr:NAME               string: the attribute's column, one fixed-width value per item row
    P:{V}:attr:NAME:codes         hash: categorical value -> code
    P:{V}:row                     hash: item id -> item row (versions with attributes)
    P:{V}:lease                   string with TTL: held while a publisher writes V
    P:{V}:complete                string: written last, after every count was verified

    P:decoders                    set: every decoder version with keys
    P:decoder:{D}:meta            hash: manifest (JSON), index version and fingerprint, file sizes, chunk count
    P:decoder:{D}:chunk           hash: chunk number -> bytes of the decoder's files, back to back
    P:decoder:{D}:complete        string: written last, after every chunk was written
    P:releases                    hash: release name -> JSON {index, decoder, fingerprint, created}
    P:release:active              string: name of the release replicas serve (unless pinned)
    P:release:history             list: activated release names, newest first (rollback goes back one)
    P:replica:{id}                string with TTL: JSON heartbeat of what a replica serves (gc keeps it)

``{V}`` is a Redis Cluster hash tag, so one version's keys share a slot and the scripts that
touch several of them (publish finalisation, inserts) stay single-slot. Another prefix gives an
independent index in the same Redis (another environment, or a benchmark on a shared server).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from sidcore.errors import DataError

DEFAULT_PREFIX = "sa2crq"

# Store version ids look like index-20250101T120000-a1b2c3; refusing anything else keeps ids (and
# prefixes) free of hash-tag braces and SCAN glob characters.
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise DataError(f"not a valid key prefix: {self.prefix!r}")

    @property
    def active(self) -> str:
        return f"{self.prefix}:active"

    @property
    def versions(self) -> str:
        return f"{self.prefix}:versions"

    @property
    def channel(self) -> str:
        return f"{self.prefix}:events"

    @property
    def decoders(self) -> str:
        return f"{self.prefix}:decoders"

    @property
    def releases(self) -> str:
        return f"{self.prefix}:releases"

    @property
    def active_release(self) -> str:
        return f"{self.prefix}:release:active"

    @property
    def release_history(self) -> str:
        return f"{self.prefix}:release:history"

    def replica(self, replica_id: str) -> str:
        return f"{self.prefix}:replica:{replica_id}"

    @property
    def replica_pattern(self) -> str:
        return f"{self.prefix}:replica:*"

    def of(self, version: str) -> "VersionKeys":
        return VersionKeys(version, self.prefix)

    def decoder(self, version: str) -> "DecoderKeys":
        return DecoderKeys(version, self.prefix)


@dataclass(frozen=True)
class _StoredVersionKeys:
    """Keys of one stored version (an index or a decoder): a hash-tagged namespace holding its
    meta, and its completion marker, which a publisher writes last."""

    version: str
    prefix: str = DEFAULT_PREFIX
    kind: ClassVar[str]  # "index" or "decoder", for messages
    infix: ClassVar[str]  # between the prefix and the hash tag: "" for indexes, "decoder:" for decoders

    def __post_init__(self) -> None:
        if not _VERSION_RE.fullmatch(self.version):
            raise DataError(f"not a valid {self.kind} version id: {self.version!r}")

    @property
    def namespace(self) -> str:
        return f"{self.prefix}:{self.infix}{{{self.version}}}"

    @property
    def pattern(self) -> str:
        return f"{self.namespace}:*"

    @property
    def meta(self) -> str:
        return f"{self.namespace}:meta"

    @property
    def complete(self) -> str:
        return f"{self.namespace}:complete"


@dataclass(frozen=True)
class VersionKeys(_StoredVersionKeys):
    kind: ClassVar[str] = "index"
    infix: ClassVar[str] = ""

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
    def inserted(self) -> str:
        return f"{self.namespace}:inserted"

    @property
    def payload(self) -> str:
        return f"{self.namespace}:payload"

    @property
    def attrs(self) -> str:
        return f"{self.namespace}:attrs"

    def column(self, name: str) -> str:
        return f"{self.namespace}:attr:{name}"

    def codes(self, name: str) -> str:
        return f"{self.namespace}:attr:{name}:codes"

    @property
    def row(self) -> str:
        return f"{self.namespace}:row"

    @property
    def lease(self) -> str:
        return f"{self.namespace}:lease"


@dataclass(frozen=True)
class DecoderKeys(_StoredVersionKeys):
    kind: ClassVar[str] = "decoder"
    infix: ClassVar[str] = "decoder:"

    @property
    def chunk(self) -> str:
        return f"{self.namespace}:chunk"


def check_name(name: str, what: str = "release name") -> str:
    """A release name or replica id, under the same rules as version ids."""
    if not _VERSION_RE.fullmatch(name):
        raise DataError(f"not a valid {what}: {name!r} (letters, digits, '.', '_', '-'; at most 128)")
    return name
