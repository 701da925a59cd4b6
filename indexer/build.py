"""The indexing pipeline: catalog -> embeddings -> head/tail -> quantizer -> SIDs -> report -> store.

Methods are named compositions of a quantizer and the SARQ truncation:

    rq-kmeans  residual k-means (faiss), fixed length
    rq-vae     TIGER RQ-VAE, fixed length
    acrq       anchored two-stage RQ-VAE, fixed length
    sarq       RQ-VAE with SARQ truncation in training and assignment
    sa2crq     ACRQ + SARQ (stage 2 truncates tail paths with the head priors)
    acrq-kmeans, sa2crq-kmeans
               the same two with k-means codebooks on the embeddings (no learned latent)
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.collab import DEFAULT_VIEWS, check_views, collaborative_vectors
from indexer.collab import DIM as COLLAB_DIM
from indexer.data.catalog import Catalog
from indexer.dedup import dedup_suffix
from indexer.quantizers import REGISTRY, QuantizerConfig
from indexer.report import plot_report, quality_report
from indexer.sarq import SARQConfig
from indexer.split import SplitConfig, head_mask
from model_store import Store
from sidcore.embed import MODEL_NAME, embed_texts
from sidcore.errors import DataError
from sidcore.index.artifact import REPORT_FILE, save_extras, save_items
from sidcore.sid import SIDTable

METHODS: dict[str, tuple[str, bool]] = {
    "rq-kmeans": ("rq-kmeans", False),
    "rq-vae": ("rq-vae", False),
    "acrq": ("acrq", False),
    "sarq": ("rq-vae", True),
    "sa2crq": ("acrq", True),
    "acrq-kmeans": ("acrq-kmeans", False),
    "sa2crq-kmeans": ("acrq-kmeans", True),
}


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines an index version (recorded in its manifest)."""

    method: str = "sa2crq"
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    sarq: SARQConfig = field(default_factory=SARQConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    dedup: bool = False
    collab_weight: float = 0.0
    collab_dim: int = COLLAB_DIM
    collab_views: tuple[str, ...] = DEFAULT_VIEWS

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DataError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        qname, adaptive = METHODS[self.method]
        sizes = self.quantizer.sizes or ()
        if REGISTRY[qname].anchored and any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise DataError(f"{self.method} needs strictly increasing codebook sizes M1 < ... < ML, got {','.join(map(str, sizes))}")
        if self.dedup and adaptive:
            raise DataError("--dedup is for the fixed-length methods; SARQ methods vary length instead")
        if not (np.isfinite(self.collab_weight) and self.collab_weight >= 0) or self.collab_dim < 1:
            raise DataError(f"collab_weight must be >= 0 and collab_dim positive, got {self.collab_weight}, {self.collab_dim}")
        check_views(self.collab_views)

    @property
    def adaptive(self) -> bool:
        return METHODS[self.method][1]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def item_vectors(catalog: Catalog, cache_dir: Path | None = None, progress: bool = True) -> tuple[np.ndarray, str]:
    if catalog.vectors is not None:
        return catalog.vectors.astype(np.float32, copy=False), "vectors"
    return embed_texts(catalog.texts, cache_dir=cache_dir, progress=progress), MODEL_NAME


def build_index(
    catalog: Catalog,
    cfg: BuildConfig,
    store: Store,
    cache_dir: Path | None = None,
    progress: bool = True,
    sequences: Sequence[Sequence[str]] | None = None,
) -> tuple[str, dict]:
    """Build, report and seal a new index version; returns (version id, report).

    ``sequences``: the training histories (held-out items removed), which ``cfg.collab_weight``
    needs: each item's vector is then its embedding with ``collab_weight`` x its collaborative
    vector appended (``indexer.collab``). Nothing is written to the store unless every stage succeeds.
    """
    t0 = time.perf_counter()
    vectors, embedder = item_vectors(catalog, cache_dir, progress)
    collab = None
    if cfg.collab_weight:
        if not sequences:
            raise DataError("collab_weight needs the training interaction sequences (--interactions sequences.jsonl)")
        extra, collab = collaborative_vectors(catalog.item_ids, sequences, cfg.collab_dim, cfg.quantizer.seed, cfg.collab_views)
        vectors = np.concatenate([vectors, cfg.collab_weight * extra], 1).astype(np.float32)
    head = head_mask(catalog.popularity, cfg.split)
    qname, adaptive = METHODS[cfg.method]
    cfg = dataclasses.replace(cfg, quantizer=cfg.quantizer.resolved(len(catalog)))
    quantizer = REGISTRY[qname](cfg.quantizer, cfg.sarq if adaptive else None)
    quantizer.fit(vectors, head, progress=progress)
    t_fit = time.perf_counter()
    codes = quantizer.encode(vectors, head=head)
    quantizer.count_catalog(codes)
    lengths = quantizer.lengths(codes)
    sizes = quantizer.sizes
    mse = float(((quantizer.reconstruct(codes, lengths) - vectors) ** 2).sum(1).mean())
    if cfg.dedup:
        codes, lengths, sizes = dedup_suffix(codes, lengths, sizes, catalog.popularity)
    table = SIDTable.build(codes, lengths, sizes, catalog.popularity)
    t_assign = time.perf_counter()
    report = quality_report(table, head, mse)
    report["timing_s"] = {"fit": t_fit - t0, "assign": t_assign - t_fit}

    config = {**cfg.as_dict(), "embedder": embedder, "dim": int(vectors.shape[1]), "collab": collab,
              "attributes": [[s.name, s.kind] for s in (catalog.attributes.specs if catalog.attributes else ())],
              "fields": list(catalog.fields)}
    with store.new_version("index", config) as d:
        quantizer.save(d)
        save_items(d, catalog.item_ids, codes, lengths, catalog.popularity, head, sizes)
        save_extras(d, catalog.attributes, catalog.payload)
        (d / REPORT_FILE).write_text(json.dumps(report, indent=2))
        plot_report(table, head, d)
    return store.last_version, report
