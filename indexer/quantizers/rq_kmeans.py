"""RQ-Kmeans: residual k-means directly on embeddings (faiss), the paper's production baseline;
and ACRQ-Kmeans, its anchored two-stage variant."""

from __future__ import annotations

import faiss
import numpy as np
from tqdm.auto import tqdm

from indexer.quantizers.base import Quantizer, anchor_plan
from sidcore.errors import DataError


def kmeans(x: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """faiss k-means centroids (k x d). Needs at least k distinct training points."""
    if len(x) < k:
        raise DataError(f"codebook size {k} exceeds the {len(x)} vectors that train it")
    km = faiss.Kmeans(
        x.shape[1], k, niter=iters, seed=seed, verbose=False, max_points_per_centroid=512, min_points_per_centroid=1
    )
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return km.centroids.copy()


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    if not len(x):
        return np.zeros(0, dtype=np.int64)
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return idx[:, 0].astype(np.int64)


class RQKMeans(Quantizer):
    name = "rq-kmeans"
    in_embedding_space = True

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(self.cfg.sizes)

    def _fit(self, x: np.ndarray, head: np.ndarray, progress: bool) -> None:
        residual = x.copy()
        self.codebooks = []
        for layer, m in enumerate(tqdm(self.cfg.sizes, desc="rq-kmeans", unit="layer", disable=not progress)):
            c = kmeans(residual, m, self.cfg.kmeans_iters, self.cfg.seed + layer)
            residual -= c[nearest(residual, c)]
            self.codebooks.append(c)

    def encode(self, x: np.ndarray, head: np.ndarray | None = None) -> np.ndarray:
        """``head`` rows use each layer's first ``cfg.sizes[l]`` codewords only: all of them here,
        ACRQ-Kmeans' anchors (its extension rows come after)."""
        residual = np.array(x, dtype=np.float32)
        head = np.zeros(len(x), dtype=bool) if head is None else np.asarray(head, dtype=bool)
        codes = np.empty((len(x), len(self.codebooks)), dtype=np.int64)
        for layer, (c, m) in enumerate(zip(self.codebooks, self.cfg.sizes)):
            codes[~head, layer] = nearest(residual[~head], c)
            codes[head, layer] = nearest(residual[head], c[:m])
            residual -= c[codes[:, layer]]
        return codes

    def reconstruct(self, codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        out = np.zeros((len(codes), self.codebooks[0].shape[1]), dtype=np.float32)
        for layer, c in enumerate(self.codebooks):
            keep = (lengths > layer)[:, None]
            out += np.where(keep, c[codes[:, layer]], 0.0)
        return out

    def codebook_vectors(self) -> list[np.ndarray]:
        return [np.asarray(c, dtype=np.float32) for c in self.codebooks]

    def _tensors(self) -> dict[str, np.ndarray]:
        return {f"codebook_{i}": c for i, c in enumerate(self.codebooks)}

    def _load_tensors(self, tensors: dict[str, np.ndarray], meta: dict) -> None:
        self.codebooks = [tensors[f"codebook_{i}"] for i in range(self.cfg.num_layers)]


class ACRQKMeans(RQKMeans):
    """ACRQ with k-means codebooks: stage 1 is RQ-Kmeans on the anchor items with M_1 < ... < M_L;
    stage 2 freezes those codewords and appends, per layer, ``extension * M_l`` new ones: k-means
    centroids of the tail items' residuals under the layers before it.

    The same curriculum as ``acrq`` without its learned latent: residuals stay in the embedding
    space itself, as RQ-Kmeans', so the decoder's codebook-initialised SID tokens and the soft
    prompt (both MiniLM-space) speak the same geometry as the codes. Head items keep anchor-only
    codes (``encode(..., head=...)``), so adding tail or cold-start items never renumbers them.
    """

    name = "acrq-kmeans"
    anchored = True

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.codebooks)

    def _fit(self, x: np.ndarray, head: np.ndarray, progress: bool) -> None:
        cfg = self.cfg
        anchors, share = anchor_plan(cfg, head)
        anchor_x, tail = x[anchors], x[~anchors].copy()
        super()._fit(anchor_x, np.ones(len(anchor_x), dtype=bool), progress)
        for layer, m in enumerate(cfg.sizes):
            new = min(round(share * m), len(tail))
            if new:
                self.codebooks[layer] = np.concatenate([self.codebooks[layer], kmeans(tail, new, cfg.kmeans_iters, cfg.seed + 100 + layer)])
            tail -= self.codebooks[layer][nearest(tail, self.codebooks[layer])]
