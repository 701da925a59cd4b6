"""An index version in the artifact store, as the indexer writes it and everyone else reads it.

Files of an ``index`` version: ``items.npz`` (per item: id, codes, SID length, popularity, head flag;
and the codebook sizes), ``report.json`` (the quality report), the quantizer (``quantizer.json`` +
``quantizer.safetensors``, what cold start encodes new items with) and the report's plots.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store import Store, Version
from sidcore.errors import DataError
from sidcore.sid import SIDTable

ITEMS_FILE = "items.npz"
REPORT_FILE = "report.json"
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

    def table(self) -> SIDTable:
        return SIDTable.build(self.codes, self.lengths, self.sizes, self.popularity)


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
    )
