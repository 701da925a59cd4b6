"""An index version in the artifact store, as the indexer writes it and everyone else reads it.

Files of an ``index`` version: ``items.npz`` (per item: id, codes, SID length, popularity, head flag;
and the codebook sizes), ``report.json`` (the quality report), the quantizer (``quantizer.json`` +
``quantizer.safetensors``, what cold start encodes new items with) and the report's plots; when the
build declared them, ``attributes.npz`` (one column per attribute, see
``sidcore.index.attributes``) and ``payload.jsonl`` (per item, the stored fields answers can return).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store import Store, Version
from sidcore.errors import DataError
from sidcore.index.attributes import Attributes, AttributeSpec, Column
from sidcore.sid import SIDTable

ITEMS_FILE = "items.npz"
REPORT_FILE = "report.json"
ATTRIBUTES_FILE = "attributes.npz"
PAYLOAD_FILE = "payload.jsonl"
QUANTIZER_FILES = ("quantizer.json", "quantizer.safetensors")


def quantizer_fingerprint(file_digests: dict[str, str]) -> str:
    """What a decoder must have been trained on to decode an index: its quantizer's identity.

    The sha256 digests of the quantizer files (codebooks, network, SARQ priors) decide every SID,
    so two index versions with equal fingerprints give every item the same SID: the same version,
    a copy of it under another id, or it extended by cold-start inserts (which never retrain).
    A rebuild (new catalog, new seed) gets a new fingerprint, whatever its codebook sizes.
    """
    missing = [f for f in QUANTIZER_FILES if f not in file_digests]
    if missing:
        raise DataError(f"no {', '.join(missing)} to fingerprint the index by")
    h = hashlib.sha256("".join(f"{f}:{file_digests[f]}\n" for f in QUANTIZER_FILES).encode())
    return h.hexdigest()[:16]


class IncompatiblePair(DataError):
    """A decoder and an index whose quantizer fingerprints differ: the decoder would name the wrong items."""


def check_pair(index_version: str, index_fingerprint: str, decoder_version: str, decoder_fingerprint: str) -> None:
    """Refuse a (index, decoder) pair unless the decoder was trained on this index's quantizer."""
    if not index_fingerprint or index_fingerprint != decoder_fingerprint:
        raise IncompatiblePair(
            f"decoder {decoder_version} was trained for quantizer fingerprint {decoder_fingerprint or '(none recorded)'}, "
            f"but index {index_version} has fingerprint {index_fingerprint or '(none recorded)'}: "
            "train a decoder for this index, or pair it with the decoder trained for it"
        )


@dataclass(frozen=True)
class IndexArtifact:
    """A loaded index version: per-item SIDs, aligned arrays over ``item_ids``.

    Item ``i``'s SID is ``codes[i, :lengths[i]]``.
    """

    version: str
    config: dict
    item_ids: np.ndarray  # str [N]
    codes: np.ndarray  # int32 [N, L], full depth
    lengths: np.ndarray  # int8 [N], SID length per item
    popularity: np.ndarray  # float64 [N]
    head: np.ndarray  # bool [N]
    sizes: tuple[int, ...]  # codebook size per layer, as served
    report: dict
    path: Path
    fingerprint: str  # quantizer_fingerprint of the version's quantizer files
    attributes: Attributes | None = None  # aligned with item_ids
    fields: tuple[str, ...] = ()  # payload field names; the values stay on disk until ``payload()``

    def table(self) -> SIDTable:
        return SIDTable.build(self.codes, self.lengths, self.sizes, self.popularity)

    def payload(self) -> list[dict]:
        """Per item (aligned with ``item_ids``), its stored fields; empty dicts without a payload."""
        if not self.fields:
            return [{} for _ in range(len(self.item_ids))]
        with open(self.path / PAYLOAD_FILE, encoding="utf-8") as f:
            return [json.loads(line) for line in f]


def save_items(directory: Path, item_ids, codes, lengths, popularity, head, sizes) -> None:
    """Write ``items.npz`` of a version being staged (see ``IndexArtifact`` for the arrays)."""
    np.savez(
        directory / ITEMS_FILE,
        item_ids=np.asarray(item_ids),
        codes=np.asarray(codes).astype(np.int32),
        lengths=np.asarray(lengths).astype(np.int8),
        popularity=np.asarray(popularity, dtype=np.float64),
        head=np.asarray(head, dtype=bool),
        sizes=np.asarray(sizes, dtype=np.int64),
    )


def save_extras(directory: Path, attributes: Attributes | None, payload: tuple[dict, ...] | None) -> None:
    """Write ``attributes.npz`` and ``payload.jsonl`` of a version being staged (when there are any)."""
    if attributes is not None and attributes.columns:
        specs = [[c.name, c.spec.kind, list(c.values)] for c in attributes.columns]
        np.savez(directory / ATTRIBUTES_FILE, specs=np.array(json.dumps(specs)), **{f"column_{i}": c.data for i, c in enumerate(attributes.columns)})
    if payload is not None:
        with open(directory / PAYLOAD_FILE, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in payload)


def _load_attributes(v: Version, num_rows: int) -> Attributes | None:
    if not (v.path / ATTRIBUTES_FILE).is_file():
        return None
    with np.load(v.file(ATTRIBUTES_FILE), allow_pickle=False) as z:
        specs = json.loads(str(z["specs"]))
        columns = tuple(Column(AttributeSpec(name, kind), z[f"column_{i}"], tuple(values)) for i, (name, kind, values) in enumerate(specs))
    return Attributes(columns, num_rows)


def load_index(store: Store, version: str | None = None) -> IndexArtifact:
    """A verified index version of ``store`` (default: its active one, else its newest)."""
    v: Version = store.open(store.resolve("index", version), kind="index")
    with np.load(v.file(ITEMS_FILE), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return IndexArtifact(
        version=v.id,
        config=v.manifest.config,
        item_ids=arrays["item_ids"],
        codes=arrays["codes"],
        lengths=arrays["lengths"],
        popularity=arrays["popularity"],
        head=arrays["head"],
        sizes=tuple(int(m) for m in arrays["sizes"]),
        report=v.json(REPORT_FILE),
        path=v.path,
        fingerprint=quantizer_fingerprint(v.manifest.files),
        attributes=_load_attributes(v, len(arrays["item_ids"])),
        fields=tuple(v.manifest.config.get("fields", ())),
    )
