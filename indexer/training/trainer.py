"""Train the Qwen3 decoder on (prompt -> SID tokens + <sid_end>) and seal it in the store.

Loss is cross-entropy over the SID range only, on the SID positions only, which is exactly the
distribution the engines decode from. Each batch mixes history/query examples with item-indexing
examples (item text -> SID) at ``indexing_share``, so every item, tail included, is generable.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging

from indexer.training.examples import Example, TrainingData, load_training_data
from model_store import Store
from sidcore.decoder.bundle import DecoderSpec, make_builder, save_decoder
from sidcore.decoder.model import TinyConfig, load_base_model, new_tiny_model, sid_logits
from sidcore.decoder.prompt import HistoryItem, PromptConfig
from sidcore.decoder.tokenizer import extend_with_sid_tokens, load_base_tokenizer, train_text_tokenizer
from sidcore.errors import DataError
from sidcore.index.artifact import IndexArtifact, load_index


@dataclass(frozen=True)
class TrainConfig:
    """Decoder training.

    Args:
        steps: optimizer steps.
        batch_size: examples per step.
        lr: peak AdamW learning rate (warm-up then cosine decay); 2e-5 suits a pretrained base.
        warmup: warm-up steps.
        indexing_share: share of each batch drawn from item-indexing examples.
        text_vocab: size of the tiny tokenizer's text vocabulary.
        seed: data order, initialisation.
        tiny: the default model shape (ignored with a base model).
        prompt: the prompt template caps.
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    indexing_share: float = 0.2
    text_vocab: int = 4096
    seed: int = 0
    tiny: TinyConfig = field(default_factory=TinyConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise DataError("steps, batch_size and lr must be positive")
        if not 0.0 <= self.indexing_share <= 1.0:
            raise DataError("indexing_share must be in [0, 1]")


class ExampleEncoder:
    """Example -> (prompt ids, target local ids), through the shared prompt template."""

    def __init__(self, spec: DecoderSpec, tok, art: IndexArtifact, titles: dict[str, str]):
        self.spec = spec
        self.builder = make_builder(spec, tok)
        self.titles = titles
        self.row = {item: i for i, item in enumerate(art.item_ids.tolist())}
        self.codes, self.lengths = art.codes, art.lengths
        self.vocab = spec.vocab

    def sid(self, item: str) -> np.ndarray:
        i = self.row[item]
        return self.codes[i, : self.lengths[i]]

    def encode(self, ex: Example) -> tuple[list[int], list[int]]:
        history = [HistoryItem(self.titles.get(h, ""), self.spec.history_tokens(self.sid(h))) for h in ex.history]
        prompt = self.builder.build(ex.query, history)
        target = [t - self.vocab.base for t in self.vocab.sid_tokens(self.sid(ex.target))]
        return prompt, target


def sid_loss(model, batch: list[tuple[list[int], list[int]]], spec: DecoderSpec, pad_id: int, device: str) -> torch.Tensor:
    """Mean cross-entropy of the target SID tokens (and end) over the SID range."""
    seqs = [p + [spec.base + t for t in tgt[:-1]] for p, tgt in batch]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    rows, cols, targets = [], [], []
    for b, ((prompt, tgt), seq) in enumerate(zip(batch, seqs)):
        ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : len(seq)] = 1
        for j, t in enumerate(tgt):
            rows.append(b)
            cols.append(len(prompt) - 1 + j)
            targets.append(t)
    hidden = model.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
    logits = sid_logits(model, hidden[torch.tensor(rows), torch.tensor(cols)], spec.base, spec.vocab.num_local)
    return torch.nn.functional.cross_entropy(logits, torch.tensor(targets, device=device))


def train_decoder(
    store: Store,
    data_dir: str | Path,
    cfg: TrainConfig = TrainConfig(),
    index_version: str | None = None,
    base_model: Path | None = None,
    data: TrainingData | None = None,
    progress: bool = True,
) -> tuple[str, dict]:
    """Train on ``data_dir`` (or pre-loaded ``data``) for an index version; returns (version, summary)."""
    art = load_index(store, index_version)
    data = data or load_training_data(data_dir, cfg.prompt.history_items)
    titles = dict(zip(data.catalog.item_ids, data.catalog.texts))
    indexed = [item for item in art.item_ids.tolist() if item in titles]
    if not indexed:
        raise DataError(f"none of the items in {data_dir} are in index {art.version}")
    in_index = set(art.item_ids.tolist())
    train = [ex for ex in data.train if ex.target in in_index]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(cfg.seed)
    if not progress:
        transformers_logging.disable_progress_bar()

    if base_model is not None:
        tok = load_base_tokenizer(base_model)
    else:
        tok = train_text_tokenizer(data.catalog.texts + [ex.query for ex in train if ex.query], cfg.text_vocab)
    base = extend_with_sid_tokens(tok, art.sizes)
    spec = DecoderSpec(art.version, art.sizes, base, cfg.prompt, str(base_model) if base_model else "tiny", art.fingerprint)
    if base_model is not None:
        model = load_base_model(base_model, len(tok))
    else:
        model = new_tiny_model(cfg.tiny, len(tok), tok.pad_token_id, cfg.seed)
    model.to(device).train()
    encoder = ExampleEncoder(spec, tok, art, titles)
    indexing = [Example(titles[item], (), item) for item in indexed]

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )
    rng = np.random.default_rng(cfg.seed)
    losses = []
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="decoder", unit="step", disable=not progress)
    for _ in bar:
        n_index = rng.binomial(cfg.batch_size, cfg.indexing_share) if train else cfg.batch_size
        picks = [indexing[i] for i in rng.integers(0, len(indexing), n_index)]
        if train:
            picks += [train[i] for i in rng.integers(0, len(train), cfg.batch_size - n_index)]
        loss = sid_loss(model, [encoder.encode(ex) for ex in picks], spec, tok.pad_token_id, device)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    summary = {
        "steps": cfg.steps,
        "final_loss": float(np.mean(losses[-50:])),
        "train_examples": len(train),
        "indexing_examples": len(indexing),
        "seconds": time.perf_counter() - t0,
    }
    model.eval()
    config = {"index_version": art.version, "index_fingerprint": art.fingerprint, "train": dataclasses.asdict(cfg),
              "base_model": spec.model, "summary": summary}
    with store.new_version("decoder", config) as d:
        save_decoder(d, spec, model.to("cpu"), tok, titles)
    return store.last_version, summary
