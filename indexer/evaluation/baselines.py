"""Baselines scored on the same cases as the generative methods, found by name in ``BASELINES``.

- ``popularity``: the most popular training items;
- ``bm25``: bm25s over the item texts, for text queries;
- ``dense``: MiniLM embeddings (or the catalog's own vectors) in a faiss inner-product index; the
  query vector is the query's embedding, or the mean of the history items' vectors, or both averaged;
- ``rules``: sequential rules: an item scores by how often it followed the user's newest items in
  the training sequences (window, decay and weights tuned on the validation cases);
- ``sasrec``: a small SASRec (causal self-attention over the history) trained on the training
  part of the sequences, full softmax over the catalog, until validation Recall@10 stops improving.

Like the generative methods, each leaves the case's own history items out of its ranking
(``exclude_history``, on by default: the next item is rarely one the user already has). Settings
that a baseline tunes or fits (rules' weights, SASRec's epochs) are chosen on the validation cases
(history ``item_ids[:-2]`` -> ``item_ids[-2]``), never on the test cases, and reported.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from indexer.cooccurrence import normalise_rows, recent_votes, transitions
from indexer.evaluation.cases import EvalData
from indexer.training.validation import sample_cases
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
        epochs: passes over the training sequences at most.
        patience: stop after this many epochs without a better validation Recall@10, and keep the
            best epoch's weights (0: train all ``epochs``).
        val_cases: validation cases scored after each epoch (a seeded sample).
        batch_size: sequences per step.
        lr: Adam learning rate.
        dropout: on embeddings and inside the blocks.
    """

    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 20
    epochs: int = 100
    patience: int = 3
    val_cases: int = 2000
    batch_size: int = 128
    lr: float = 2e-3  # on games' validation users 1e-3 reached Recall@10 0.028 after 2 epochs, 2e-3 0.049 (best 0.123 at epoch 10)
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if min(self.dim, self.layers, self.heads, self.max_len, self.epochs, self.batch_size, self.val_cases) < 1 or self.lr <= 0:
            raise DataError("SASRec dim, layers, heads, max_len, epochs, batch_size, val_cases and lr must be positive")
        if self.patience < 0:
            raise DataError("SASRec patience must be >= 0")
        if self.dim % self.heads:
            raise DataError(f"SASRec dim {self.dim} must be a multiple of heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise DataError("SASRec dropout must be in [0, 1)")


@dataclass(frozen=True)
class RulesConfig:
    """The sequential-rules baseline: score(b) = sum over the user's newest items a of
    recency^(age of a) * C[a, b] / rowsum(C[a])^beta, where C counts training pairs "b came d <= window
    items after a" with weight decay^(d-1), plus ``reverse`` times the pairs with b before a.

    Each field lists the values tried; the best combination on the validation cases is used
    (a coordinate search: pair counting, then scoring, then pair counting again).

    Args:
        window: how far after a an item still counts as following it.
        decay: weight per extra step between a and b.
        reverse: weight of b-before-a pairs.
        last: newest history items that vote.
        recency: weight per step back in the history.
        beta: normalisation of a's row by its total count.
        val_cases: validation cases the search scores (a seeded sample).
    """

    window: tuple[int, ...] = (1, 3, 10, 50)
    decay: tuple[float, ...] = (1.0, 0.7)
    reverse: tuple[float, ...] = (0.0, 0.3, 1.0)
    last: tuple[int, ...] = (1, 3, 5, 10)
    recency: tuple[float, ...] = (0.3, 0.6, 1.0)
    beta: tuple[float, ...] = (0.0, 0.5, 1.0)
    val_cases: int = 2000

    def __post_init__(self) -> None:
        grids = (self.window, self.decay, self.reverse, self.last, self.recency, self.beta)
        if not all(grids) or min(self.window) < 1 or min(self.last) < 1 or self.val_cases < 1:
            raise DataError("rules: every grid needs values; window, last and val_cases must be positive")


class Baseline(ABC):
    """Rank catalog items for each case. Subclasses register under their ``name``."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        BASELINES[cls.name] = cls

    def __init__(self, seed: int = 0, cache_dir: Path | None = None, progress: bool = True, sasrec: SASRecConfig = SASRecConfig(),
                 rules: RulesConfig = RulesConfig(), exclude_history: bool = True):
        self.seed, self.cache_dir, self.progress, self.sasrec, self.rules = seed, cache_dir, progress, sasrec, rules
        self.exclude_history = exclude_history
        self.fitted: dict = {}  # what the baseline chose or learnt on validation (reported)

    def skip_reason(self, data: EvalData) -> str | None:
        """Why this baseline does not apply to these cases, or None."""
        return None

    def config(self) -> dict:
        return {"exclude_history": self.exclude_history}

    @abstractmethod
    def rank(self, data: EvalData, k: int) -> list[list[str]]:
        """Top ``k`` item ids per case of ``data.cases``, best first."""

    def _top(self, scores: np.ndarray, history_rows: list[int], k: int) -> np.ndarray:
        """Rows of the ``k`` best scores (float [N]), the history's own items left out if asked."""
        if self.exclude_history and history_rows:
            scores = scores.copy()
            scores[history_rows] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if 0 < k < len(scores) else np.arange(len(scores))[:k]
        return top[np.lexsort((top, -scores[top]))]


class Popularity(Baseline):
    name = "popularity"

    def rank(self, data: EvalData, k: int) -> list[list[str]]:
        cat = data.catalog
        pop = np.asarray(cat.popularity, dtype=np.float64)
        return [[cat.item_ids[i] for i in self._top(pop, [cat.index_of[h] for h in c.history], k)] for c in data.cases]


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
            history = set(c.history) if self.exclude_history else set()
            docs, scores = retriever.retrieve(tokens, k=min(k + len(history), len(data.catalog)), show_progress=False)
            ranked = [data.catalog.item_ids[int(d)] for d, s in zip(docs[0], scores[0]) if s > 0]
            out.append([i for i in ranked if i not in history][:k])
        return out


class Dense(Baseline):
    name = "dense"

    def skip_reason(self, data: EvalData) -> str | None:
        if data.catalog.vectors is not None and data.has_queries:
            return "the catalog has its own vectors, so text queries cannot be embedded in their space"
        return None

    def config(self) -> dict:
        from sidcore.embed import MODEL_NAME

        return {**super().config(), "embedder": MODEL_NAME, "index": "faiss.IndexFlatIP"}

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
        extra = max((len(c.history) for c in data.cases), default=0) if self.exclude_history else 0
        _, rows = index.search(vecs, min(k + extra, len(cat)))
        out = []
        for c, row in zip(data.cases, rows):
            history = set(c.history) if self.exclude_history else set()
            out.append([i for i in (cat.item_ids[r] for r in row if r >= 0) if i not in history][:k])
        return out


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


def sequence_skip_reason(data: EvalData) -> str | None:
    """Why a baseline that learns from training sequences cannot run on ``data`` (None: it can)."""
    if not data.has_histories:
        return "the cases have no histories"
    if not any(len(s) >= 2 for s in data.train_sequences):
        return "no training sequences of two or more items"
    return None


class SASRec(Baseline):
    name = "sasrec"

    def skip_reason(self, data: EvalData) -> str | None:
        return sequence_skip_reason(data)

    def config(self) -> dict:
        return {**super().config(), **asdict(self.sasrec)}

    def _batch(self, rows: list[list[int]], T: int) -> torch.Tensor:
        """Right-padded tensor of the newest ``T`` rows of each list, as wide as the longest one."""
        T = max(1, min(T, max(map(len, rows), default=1)))
        out = torch.zeros((len(rows), T), dtype=torch.long)
        for b, r in enumerate(rows):
            r = r[-T:]
            out[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    def fit(self, data: EvalData) -> SASRecModel:
        """Train on the training sequences; after each epoch score validation Recall@10 and keep
        the best epoch's weights, stopping after ``patience`` epochs without improvement."""
        cfg = self.sasrec
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        idx = data.catalog.index_of
        seqs = [[idx[i] + 1 for i in s][-(cfg.max_len + 1) :] for s in data.train_sequences if len(s) >= 2]
        valid = validation_sample(data, cfg.val_cases, self.seed)
        model = SASRecModel(len(data.catalog), cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        best, best_epoch, curve = (-1.0, -1.0), 0, []
        best_state = None
        bar = tqdm(total=cfg.epochs, desc="sasrec", unit="epoch", disable=not self.progress)
        for epoch in range(1, cfg.epochs + 1):
            model.train()
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
            if not valid:
                continue
            model.eval()
            with torch.inference_mode():
                ranked = self._predict(model, data.catalog, [h for h, _ in valid], 10)
            quality = validation_quality(ranked, [t for _, t in valid])
            curve.append(round(quality[0], 4))
            bar.set_postfix(loss=f"{loss.item():.3f}", val_recall10=f"{quality[0]:.4f}")
            if quality > best:
                best, best_epoch = quality, epoch
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            elif cfg.patience and epoch - best_epoch >= cfg.patience:
                break
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        self.fitted = {"best_epoch": best_epoch or cfg.epochs, "epochs_run": epoch, "val_recall10": round(best[0], 4) if valid else None,
                       "val_cases": len(valid), "val_curve": curve}
        return model.eval()

    def rank(self, data: EvalData, k: int) -> list[list[str]]:
        model = self.fit(data)
        with torch.inference_mode():
            return self._predict(model, data.catalog, [c.history for c in data.cases], k)

    def _predict(self, model: SASRecModel, catalog, histories: list[tuple[str, ...]], k: int) -> list[list[str]]:
        idx, ids = catalog.index_of, catalog.item_ids
        out = []
        for i in range(0, len(histories), 256):
            chunk = histories[i : i + 256]
            rows = [[idx[x] + 1 for x in h] for h in chunk]
            last = torch.tensor([max(min(len(r), self.sasrec.max_len) - 1, 0) for r in rows])
            h = model(self._batch(rows, self.sasrec.max_len))[torch.arange(len(rows)), last]
            scores = model.scores(h).numpy()
            out += [[ids[j] for j in self._top(s, [r - 1 for r in row], k)] if row else [] for s, row in zip(scores, rows)]
        return out


def validation_quality(ranked: list, targets: list) -> tuple[float, float]:
    """(Recall@10, MRR@10) of rankings against one target each: what tuning maximises, in that
    order (MRR breaks ties, e.g. when every method reaches the target within 10)."""
    ranks = [list(r[:10]).index(t) + 1 if t in list(r[:10]) else 0 for r, t in zip(ranked, targets)]
    return float(np.mean([r > 0 for r in ranks])), float(np.mean([1 / r if r else 0.0 for r in ranks]))


def validation_sample(data: EvalData, n: int, seed: int) -> list[tuple[tuple[str, ...], str]]:
    """Up to ``n`` validation cases (history, target), a seeded sample: what baselines tune on."""
    return [(ex.history, ex.target) for ex in sample_cases([ex for ex in data.training.valid if ex.history], n, seed)]


class Rules(Baseline):
    name = "rules"

    def skip_reason(self, data: EvalData) -> str | None:
        return sequence_skip_reason(data)

    def config(self) -> dict:
        return {**super().config(), **asdict(self.rules)}

    def rank(self, data: EvalData, k: int) -> list[list[str]]:
        idx = data.catalog.index_of
        seqs = [np.array([idx[i] for i in s], dtype=np.int64) for s in data.train_sequences if len(s) >= 2]
        n = len(data.catalog)
        valid = [([idx[i] for i in h], idx[t]) for h, t in validation_sample(data, self.rules.val_cases, self.seed)]
        counts: dict[tuple, sp.csr_matrix] = {}

        def matrix(window: int, decay: float, reverse: float) -> sp.csr_matrix:
            key = (window, decay, reverse)
            if key not in counts:
                counts.clear()  # one matrix alive at a time: each is tens of MB on a large catalog
                counts[key] = transitions(seqs, n, window, decay, reverse)
            return counts[key]

        def recall(pairs: dict, scoring: dict) -> tuple[float, float]:
            ranked = self._score(matrix(**pairs), [h for h, _ in valid], 10, **scoring)
            return validation_quality([r.tolist() for r in ranked], [t for _, t in valid])

        r = self.rules
        pairs = {"window": r.window[0], "decay": r.decay[0], "reverse": r.reverse[0]}
        scoring = {"last": r.last[0], "recency": r.recency[0], "beta": r.beta[0]}
        tried: dict = {}
        for _ in range(2):
            for grid, target in (((r.window, r.decay, r.reverse), pairs), ((r.last, r.recency, r.beta), scoring)):
                names = list(target)
                best = None
                for values in itertools.product(*grid):
                    cand = dict(zip(names, values))
                    p, s = (cand, scoring) if target is pairs else (pairs, cand)
                    key = (tuple(p.items()), tuple(s.items()))
                    if key not in tried:
                        tried[key] = recall(p, s)
                    if best is None or tried[key] > best[0]:
                        best = (tried[key], cand)
                target.update(best[1])
        self.fitted = {**pairs, **scoring, "val_recall10": round(tried[(tuple(pairs.items()), tuple(scoring.items()))][0], 4),
                       "val_cases": len(valid), "combinations_tried": len(tried)}
        histories = [[idx[i] for i in c.history] for c in data.cases]
        ranked = self._score(matrix(**pairs), histories, k, **scoring)
        return [[data.catalog.item_ids[j] for j in rows] for rows in ranked]

    def _score(self, C: sp.csr_matrix, histories: list[list[int]], k: int, last: int, recency: float, beta: float) -> list[np.ndarray]:
        C = normalise_rows(C, beta)
        pop = np.asarray(C.sum(0)).ravel()
        pop = 1e-9 * pop / max(pop.max(), 1e-12)  # ties (and users with no known transitions) fall back to popularity
        out = []
        for h in histories:
            recent, w = recent_votes(h, last, recency)
            scores = np.asarray(C[recent].T @ w).ravel() if recent else np.zeros(C.shape[0])
            out.append(self._top(scores + pop, h, k) if h else np.array([], dtype=np.int64))
        return out
