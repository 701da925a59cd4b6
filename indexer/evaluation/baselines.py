"""Baselines scored on the same cases as the generative methods, found by name in ``BASELINES``.

- ``popularity``: the most popular training items, the same list for every case;
- ``bm25``: bm25s over the item texts, for text queries;
- ``dense``: MiniLM embeddings (or the catalog's own vectors) in a faiss inner-product index; the
  query vector is the query's embedding, or the mean of the history items' vectors, or both averaged;
- ``sasrec``: a small SASRec (causal self-attention over the history) trained on the training
  part of the sequences, full softmax over the catalog, for histories.

They rank every item; leaving a case's history out (``EvalConfig.exclude_history``, on by
default, as for the generative methods) is the runner's job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from indexer.evaluation.cases import EvalData
from sidcore.errors import DataError

BASELINES: dict[str, type["Baseline"]] = {}


@dataclass(frozen=True)
class SASRecConfig:
    """The SASRec baseline (Kang & McAuley, 2018), sized for a CPU.

    Args:
        dim: item and position embedding width.
        layers: self-attention blocks.
        heads: attention heads.
        max_len: newest history items the model reads.
        epochs: passes over the training sequences.
        batch_size: sequences per step.
        lr: Adam learning rate.
        dropout: on embeddings and inside the blocks.
    """

    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 20
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if min(self.dim, self.layers, self.heads, self.max_len, self.epochs, self.batch_size) < 1 or self.lr <= 0:
            raise DataError("SASRec dim, layers, heads, max_len, epochs, batch_size and lr must be positive")
        if self.dim % self.heads:
            raise DataError(f"SASRec dim {self.dim} must be a multiple of heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise DataError("SASRec dropout must be in [0, 1)")


class Baseline(ABC):
    """Rank catalog items for each case. Subclasses register under their ``name``."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        BASELINES[cls.name] = cls

    def __init__(self, seed: int = 0, cache_dir: Path | None = None, progress: bool = True, sasrec: SASRecConfig = SASRecConfig()):
        self.seed, self.cache_dir, self.progress, self.sasrec = seed, cache_dir, progress, sasrec

    def skip_reason(self, data: EvalData) -> str | None:
        """Why this baseline does not apply to these cases, or None."""
        return None

    def config(self) -> dict:
        return {}

    @abstractmethod
    def rank(self, data: EvalData, k: int) -> list[list[str]]:
        """Top ``k`` item ids per case of ``data.cases``, best first."""


class Popularity(Baseline):
    name = "popularity"

    def rank(self, data: EvalData, k: int) -> list[list[str]]:
        top = [data.catalog.item_ids[i] for i in np.argsort(-data.catalog.popularity, kind="stable")[:k]]
        return [list(top) for _ in data.cases]


class BM25(Baseline):
    name = "bm25"

    def skip_reason(self, data: EvalData) -> str | None:
        return None if data.has_queries else "the cases have no text queries"

    def rank(self, data: EvalData, k: int) -> list[list[str]]:
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(data.catalog.texts, stopwords="en", show_progress=False), show_progress=False)
        k = min(k, len(data.catalog))
        out = []
        for c in data.cases:
            if not c.query:
                out.append([])
                continue
            tokens = bm25s.tokenize([c.query], stopwords="en", show_progress=False)
            # A query of stop words only has no tokens; bm25s cannot score it.
            if not len(tokens.ids[0]):
                out.append([])
                continue
            docs, scores = retriever.retrieve(tokens, k=k, show_progress=False)
            out.append([data.catalog.item_ids[int(d)] for d, s in zip(docs[0], scores[0]) if s > 0])
        return out


class Dense(Baseline):
    name = "dense"

    def skip_reason(self, data: EvalData) -> str | None:
        if data.catalog.vectors is not None and data.has_queries:
            return "the catalog has its own vectors, so text queries cannot be embedded in their space"
        return None

    def config(self) -> dict:
        from sidcore.embed import MODEL_NAME

        return {"embedder": MODEL_NAME, "index": "faiss.IndexFlatIP"}

    def rank(self, data: EvalData, k: int) -> list[list[str]]:
        import faiss

        from sidcore.embed import embed_texts

        cat = data.catalog
        if cat.vectors is not None:
            items = cat.vectors.astype(np.float32)
            items = items / np.linalg.norm(items, axis=1, keepdims=True)
        else:
            items = embed_texts(cat.texts, cache_dir=self.cache_dir, progress=self.progress)
        queries = [c.query for c in data.cases if c.query]
        qvec = dict(zip(queries, embed_texts(queries, cache_dir=self.cache_dir, progress=self.progress))) if queries else {}
        vecs = np.zeros((len(data.cases), items.shape[1]), dtype=np.float32)
        for r, c in enumerate(data.cases):
            parts = [qvec[c.query]] if c.query else []
            if c.history:
                parts.append(items[[cat.index_of[h] for h in c.history]].mean(0))
            vecs[r] = np.mean(parts, axis=0)
        index = faiss.IndexFlatIP(items.shape[1])
        index.add(items)
        _, rows = index.search(vecs, min(k, len(cat)))
        return [[cat.item_ids[i] for i in row if i >= 0] for row in rows]


class SASRecModel(torch.nn.Module):
    """Item + position embeddings, causal Transformer blocks, scores = hidden · item embeddings."""

    def __init__(self, num_items: int, cfg: SASRecConfig):
        super().__init__()
        self.items = torch.nn.Embedding(num_items + 1, cfg.dim, padding_idx=0)  # row 0 = padding
        # Unit-norm item rows: with N(0, 1) rows the first logits (LayerNorm output · item row) are
        # ~±dim and the loss starts near 50 instead of ln(num_items).
        torch.nn.init.normal_(self.items.weight, std=cfg.dim**-0.5)
        with torch.no_grad():
            self.items.weight[0].zero_()
        self.positions = torch.nn.Embedding(cfg.max_len, cfg.dim)
        self.dropout = torch.nn.Dropout(cfg.dropout)
        block = torch.nn.TransformerEncoderLayer(cfg.dim, cfg.heads, cfg.dim * 2, cfg.dropout, batch_first=True, norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(block, cfg.layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(cfg.dim)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq``: B x T item rows (+1, 0 = padding), right-padded. Returns B x T x dim.

        Right padding under a causal mask: real positions never see a pad, and no attention row is
        ever fully masked (a key padding mask would give the pad rows NaNs that leak onwards).
        """
        T = seq.shape[1]
        x = self.items(seq) * self.items.embedding_dim**0.5 + self.positions(torch.arange(T, device=seq.device))
        causal = torch.nn.Transformer.generate_square_subsequent_mask(T, device=seq.device)
        return self.norm(self.blocks(self.dropout(x), mask=causal, is_causal=True))

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.items.weight[1:].T  # over real items only


class SASRec(Baseline):
    name = "sasrec"

    def skip_reason(self, data: EvalData) -> str | None:
        if not data.has_histories:
            return "the cases have no histories"
        if not any(len(s) >= 2 for s in data.train_sequences):
            return "no training sequences of two or more items"
        return None

    def config(self) -> dict:
        return asdict(self.sasrec)

    def _batch(self, rows: list[list[int]], T: int) -> torch.Tensor:
        """Right-padded tensor of the newest ``T`` rows of each list, as wide as the longest one."""
        T = max(1, min(T, max(map(len, rows), default=1)))
        out = torch.zeros((len(rows), T), dtype=torch.long)
        for b, r in enumerate(rows):
            r = r[-T:]
            out[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    def fit(self, data: EvalData) -> SASRecModel:
        cfg = self.sasrec
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        idx = data.catalog.index_of
        seqs = [[idx[i] + 1 for i in s][-(cfg.max_len + 1) :] for s in data.train_sequences if len(s) >= 2]
        model = SASRecModel(len(data.catalog), cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        model.train()
        steps = cfg.epochs * -(-len(seqs) // cfg.batch_size)
        bar = tqdm(total=steps, desc="sasrec", unit="step", disable=not self.progress)
        for _ in range(cfg.epochs):
            order = rng.permutation(len(seqs))
            for i in range(0, len(seqs), cfg.batch_size):
                batch = [seqs[j] for j in order[i : i + cfg.batch_size]]
                inputs = self._batch([s[:-1] for s in batch], cfg.max_len)
                targets = self._batch([s[1:] for s in batch], cfg.max_len)
                h = model(inputs)
                real = targets > 0
                # Loss at real positions only: full softmax over the catalog, without B x T x N logits.
                loss = torch.nn.functional.cross_entropy(model.scores(h[real]), targets[real] - 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        return model.eval()

    def rank(self, data: EvalData, k: int) -> list[list[str]]:
        model = self.fit(data)
        with torch.inference_mode():
            return self._predict(model, data, k)

    def _predict(self, model: SASRecModel, data: EvalData, k: int) -> list[list[str]]:
        idx, ids = data.catalog.index_of, data.catalog.item_ids
        out = []
        for i in range(0, len(data.cases), 256):
            chunk = data.cases[i : i + 256]
            rows = [[idx[x] + 1 for x in c.history] for c in chunk]
            last = torch.tensor([max(min(len(r), self.sasrec.max_len) - 1, 0) for r in rows])
            h = model(self._batch(rows, self.sasrec.max_len))[torch.arange(len(rows)), last]
            top = torch.topk(model.scores(h), min(k, len(ids)), dim=1).indices
            out += [[ids[j] for j in row] if c.history else [] for c, row in zip(chunk, top.tolist())]
        return out
