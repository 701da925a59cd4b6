"""One interface for every quantizer; concrete ones register themselves by name.

A quantizer maps embeddings to full-depth residual codes (N x L). When it carries a SARQ config
it also holds head-path priors and turns codes into variable lengths; the artifact it saves
(``quantizer.json`` + ``quantizer.safetensors``) is all a cold-start encoder needs later.
"""

from __future__ import annotations

import dataclasses
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from safetensors.numpy import load_file, save_file

from indexer.sarq import PathPriors, SARQConfig, truncate
from sidcore.errors import DataError

REGISTRY: dict[str, type["Quantizer"]] = {}


@dataclass(frozen=True)
class QuantizerConfig:
    """Hyper-parameters shared by the quantizers (each uses the ones that concern it).

    Args:
        sizes: codebook size per layer (before any ACRQ extension); None: from the catalog
            (``default_codebook_sizes``, resolved by ``resolved``).
        seed: seeds k-means, weight init, shuffling and dead-code resets.
        kmeans_iters: Lloyd iterations of every faiss k-means (RQ-Kmeans layers, RQ-VAE init).
        latent_dim: RQ-VAE latent (codeword) dimension.
        hidden: RQ-VAE encoder widths; the decoder mirrors them.
        epochs: RQ-VAE training epochs (per stage for ACRQ).
        batch_size: RQ-VAE minibatch.
        lr: Adam learning rate.
        beta: commitment weight in recon + codebook + beta * commit.
        dead_code_reset: re-seed codewords unused during an epoch from current residuals.
        extension: ACRQ new codewords per layer, as a share of that layer's head size; None: from
            the head/tail balance (``default_extension``).
        anchor_share: ACRQ's first stage fits on at least this share of the catalog, and on at
            least as many items as its last layer has codewords: the head, topped up with a seeded
            sample of tail items when it is smaller (``anchor_items``); 0: the head alone where it
            is large enough, as in the paper.
        train_sample: fit on at most this many items (seeded sample); all items are encoded.
    """

    sizes: tuple[int, ...] | None = None
    seed: int = 0
    kmeans_iters: int = 20
    latent_dim: int = 32
    hidden: tuple[int, ...] = (512, 256, 128)
    epochs: int = 60
    batch_size: int = 512
    lr: float = 1e-3
    beta: float = 0.25
    dead_code_reset: bool = True
    extension: float | None = None
    anchor_share: float = 0.2
    train_sample: int = 200_000

    def __post_init__(self) -> None:
        if self.sizes is not None and (not self.sizes or any(m < 1 for m in self.sizes)):
            raise DataError(f"codebook sizes must be positive integers, got {self.sizes}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.latent_dim < 1:
            raise DataError("epochs, batch_size, latent_dim and lr must be positive")
        if self.extension is not None and not 0.0 <= self.extension <= 4.0:
            raise DataError(f"extension must be in [0, 4], got {self.extension}")
        if not 0.0 <= self.anchor_share <= 1.0:
            raise DataError(f"anchor_share must be in [0, 1], got {self.anchor_share}")

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    def resolved(self, num_items: int) -> "QuantizerConfig":
        """This config with its codebook sizes, from the catalog when none were given."""
        if self.sizes is not None:
            return self
        return dataclasses.replace(self, sizes=default_codebook_sizes(num_items))


def default_codebook_sizes(num_items: int, layers: int = 3, largest_first: int = 512, items_per_codeword: float = 2.5) -> tuple[int, ...]:
    """Codebook sizes M, 2M, 4M, ... that fit a catalog, M a power of two, at least 8 and at most
    ``largest_first``. The last layer is the largest that leaves each codeword at least
    ``items_per_codeword`` of the catalog's items. Growing sizes are what ACRQ needs (M1 < ... < ML);
    its anchors grow to the last layer's size to fit them (``anchor_count``).

    Games (16,859 items): 512, 1024, 2048, the cap (at 256, 512, 1024 SA²CRQ's collision rate was
    0.12 against 0.05, and the decoder's Recall@10 behind in four of four same-machine pairs; 1024,
    2048, 4096 were level on validation, 0.111 against 0.1115, at 1.56x the training time, stop 49). SciFact
    (5,183 documents): 512, 1024, 2048 (RQ-Kmeans' decoder was ahead of 256, 512, 1024 on its
    validation claims at both seeds run, as 256, 512, 1024 had been ahead of 128, 256, 512).
    """
    last = max(num_items, 32) / items_per_codeword
    m = int(min(max(2 ** int(math.log2(last / 2 ** (layers - 1))), 8), largest_first))
    return tuple(m * 2**layer for layer in range(layers))


def anchor_count(num_items: int, num_head: int, share: float, last_layer: int) -> int:
    """How many items ACRQ's first stage fits on: the head, or ``share`` of the catalog, or the
    last layer's codeword count (k-means places no more centroids than it has points), whichever
    is most, and never more than the catalog."""
    return min(max(num_head, math.ceil(share * num_items), last_layer), num_items)


def anchor_items(head: np.ndarray, share: float, seed: int, last_layer: int = 0) -> np.ndarray:
    """Boolean mask [N] of ACRQ's first-stage items: ``head`` (bool [N]), topped up with a seeded
    sample of tail items to ``anchor_count`` items (``ceil(share * N)``, or ``last_layer``, the
    last codebook's size) when the head holds fewer.

    The paper fits the anchor codebooks on the head because its popular items cover the
    embedding space. A head that is a small share of the catalog need not: scifact's is the 340
    documents (6.6%) that training claims happen to cite, and an encoder fit on them mapped the
    other 4,843 with twice RQ-Kmeans' reconstruction error. A random sample of the tail brings
    the anchors back to the catalog's own density; the head itself is unchanged everywhere else
    (SARQ's priors, head/tail figures). Growing the anchors to the last layer's size lets ACRQ
    take the catalog's codebook sizes: scifact's SA²CRQ, 2,048 anchors and 512,1024,2048 against
    1,037 and 256,512,1024, reached validation Recall@10 0.803 and 0.848 against 0.682 and 0.667
    (two seeds). Games' head (6,404 of 16,859) is above both bounds, so nothing changes there; a
    share of 0.4 that adds 340 tail items to it was behind on its validation at four of four seeds.
    """
    head = np.asarray(head, dtype=bool)
    need = anchor_count(len(head), int(head.sum()), share, last_layer) - int(head.sum())
    if need <= 0:
        return head
    tail = np.flatnonzero(~head)
    pick = np.random.default_rng(seed).choice(tail, min(need, len(tail)), replace=False)
    anchors = head.copy()
    anchors[pick] = True
    return anchors


def anchor_plan(cfg: QuantizerConfig, head: np.ndarray) -> tuple[np.ndarray, float]:
    """ACRQ's two stages, shared by its RQ-VAE and k-means forms: the anchor mask [N]
    (``anchor_items``) and the extension share per layer (``cfg.extension``, else
    ``default_extension``), after checking M1 < ... < ML."""
    if list(cfg.sizes) != sorted(set(cfg.sizes)):
        raise DataError(f"ACRQ needs strictly increasing codebook sizes M1 < ... < ML, got {cfg.sizes}")
    anchors = anchor_items(head, cfg.anchor_share, cfg.seed, cfg.sizes[-1])
    num_anchors = int(anchors.sum())
    share = cfg.extension if cfg.extension is not None else default_extension(num_anchors, len(anchors) - num_anchors)
    return anchors, share


def default_extension(num_head: int, num_tail: int) -> float:
    """ACRQ's new codewords per layer, as a share of the head's: the paper's small extension (a
    quarter) while the head is at least a fifth of the catalog; below that, a quarter of the
    tail-to-head item ratio, at most 4.

    A small extension assumes the head's anchors cover the space and the tail needs only a few
    more codewords. A head that is a small share of the catalog does not cover it: on scifact
    (340 head / 4,843 tail documents) the quarter put the tail on 2,809 SIDs (collision rate 0.67)
    and the decoder's validation Recall@10 at 0.44; a share of 4 gave 4,905 SIDs (0.10) and 0.77.
    On games (6.4k head of 16.9k items) a share of 0.41 instead of the quarter lowered validation
    Recall@10 (0.068 against 0.086), so a head of a fifth or more keeps the quarter. ``num_head``
    counts ACRQ's anchors (``anchor_items``), which by default are at least a fifth.
    """
    if num_head * 4 >= num_tail:
        return 0.25
    return float(min(4.0, 0.25 * num_tail / max(num_head, 1)))


class Quantizer(ABC):
    name: ClassVar[str]
    anchored: ClassVar[bool] = False  # ACRQ: codebooks fit on anchor items first (M1 < ... < ML)
    # Codewords are k-means centroids of the item vectors themselves (not of a learned latent), so a
    # decoder whose SID embeddings start from them already sees the embedding's neighbourhoods.
    in_embedding_space: ClassVar[bool] = False

    def __init__(self, cfg: QuantizerConfig, sarq: SARQConfig | None = None):
        self.cfg = cfg
        self.sarq = sarq
        self.priors: PathPriors | None = None
        self.budgets: np.ndarray | None = None
        self.catalog_paths: PathPriors | None = None  # SARQ's max_group: the indexed catalog's path counts
        self.num_head = 0

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls

    # -- what each quantizer provides ---------------------------------------------------------
    @property
    @abstractmethod
    def sizes(self) -> tuple[int, ...]:
        """Codebook size per layer as served (after any extension)."""

    @abstractmethod
    def _fit(self, x: np.ndarray, head: np.ndarray, progress: bool) -> None: ...

    @abstractmethod
    def encode(self, x: np.ndarray, head: np.ndarray | None = None) -> np.ndarray:
        """Full-depth codes (N x L, int64). ``head`` marks items restricted to anchor codewords."""

    @abstractmethod
    def reconstruct(self, codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Embedding-space reconstruction from the first ``lengths`` codes of each item."""

    @abstractmethod
    def codebook_vectors(self) -> list[np.ndarray]:
        """Each layer's codewords, float32 [M_l, d] (d: the space the residuals live in)."""

    @abstractmethod
    def _tensors(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _load_tensors(self, tensors: dict[str, np.ndarray], meta: dict) -> None: ...

    def _meta(self) -> dict:
        return {}

    # -- shared behaviour ---------------------------------------------------------------------
    def fit(self, x: np.ndarray, head: np.ndarray, progress: bool = True) -> "Quantizer":
        x = np.ascontiguousarray(x, dtype=np.float32)
        head = np.asarray(head, dtype=bool)
        cap = self.cfg.train_sample
        if len(x) > cap:
            idx = np.sort(np.random.default_rng(self.cfg.seed).choice(len(x), cap, replace=False))
            x, head = x[idx], head[idx]
        self.num_head = int(head.sum())
        self._fit(x, head, progress)
        if self.sarq is not None:
            self.fit_priors(self.encode(x[head], head=np.ones(self.num_head, dtype=bool)))
        return self

    def fit_priors(self, head_codes: np.ndarray) -> None:
        assert self.sarq is not None
        self.priors = PathPriors.fit(head_codes, self.sizes, self.sarq.smoothing)
        self.budgets = self.sarq.budgets(len(self.sizes), self.priors.prefix_information(head_codes))

    def count_catalog(self, codes: np.ndarray) -> None:
        """Record the catalog's full-depth codes, which SARQ's ``max_group`` bounds short IDs by."""
        if self.sarq is not None and self.sarq.max_group is not None:
            self.catalog_paths = PathPriors.fit(codes, self.sizes, self.sarq.smoothing)

    def lengths(self, codes: np.ndarray) -> np.ndarray:
        if self.priors is None:
            return np.full(len(codes), len(self.sizes), dtype=np.int64)
        if self.sarq.max_group is not None and self.catalog_paths is None:
            raise DataError("SARQ's max_group needs the catalog's codes: call count_catalog(codes) first")
        through = None if self.catalog_paths is None else self.catalog_paths.prefix_counts(codes)
        return truncate(self.priors.prefix_information(codes), self.budgets, self.sarq, through)

    def save(self, directory: Path) -> None:
        tensors = {f"q.{k}": np.ascontiguousarray(v) for k, v in self._tensors().items()}
        if self.priors is not None:
            tensors.update({f"priors.{k}": np.ascontiguousarray(v) for k, v in self.priors.state().items()})
        if self.catalog_paths is not None:
            tensors.update({f"catalog.{k}": np.ascontiguousarray(v) for k, v in self.catalog_paths.state().items()})
        save_file(tensors, str(directory / "quantizer.safetensors"))
        meta = {
            "name": self.name,
            "config": dataclasses.asdict(self.cfg),
            "sarq": dataclasses.asdict(self.sarq) if self.sarq else None,
            "budgets": None if self.budgets is None else self.budgets.tolist(),
            "num_head": self.num_head,
            "sizes": list(self.sizes),
            **self._meta(),
        }
        (directory / "quantizer.json").write_text(json.dumps(meta, indent=2))


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def quantizer_class(directory: Path) -> type[Quantizer]:
    """The class of the quantizer saved in ``directory``, from its metadata alone (no tensors read):
    what a caller needs to know what kind of codes an index holds."""
    return _class_of(json.loads((directory / "quantizer.json").read_text()), directory)


def _class_of(meta: dict, directory: Path) -> type[Quantizer]:
    if meta.get("name") not in REGISTRY:
        raise DataError(f"{directory}: quantizer {meta.get('name')!r} written by an incompatible indexer version; rebuild the index")
    return REGISTRY[meta["name"]]


def load_quantizer(directory: Path) -> Quantizer:
    meta = json.loads((directory / "quantizer.json").read_text())
    tensors = load_file(str(directory / "quantizer.safetensors"))
    cls = _class_of(meta, directory)
    try:
        # Indexes built before max_group existed had no bound, whatever today's default.
        sarq = SARQConfig(**{"max_group": None, **_tuples(meta["sarq"])}) if meta["sarq"] else None
        q = cls(QuantizerConfig(**_tuples(meta["config"])), sarq)
    except (KeyError, TypeError) as e:
        raise DataError(f"{directory}: quantizer written by an incompatible indexer version ({e}); rebuild the index") from None
    q.num_head = meta["num_head"]
    q._load_tensors({k[2:]: v for k, v in tensors.items() if k.startswith("q.")}, meta)
    priors = {k[7:]: v for k, v in tensors.items() if k.startswith("priors.")}
    if priors:
        q.priors = PathPriors.from_state(priors)
        q.budgets = np.asarray(meta["budgets"], dtype=np.float64)
    catalog = {k[8:]: v for k, v in tensors.items() if k.startswith("catalog.")}
    if catalog:
        q.catalog_paths = PathPriors.from_state(catalog)
    return q
