"""Train the Qwen3 decoder and seal it in the store.

The recipe (docs/decoder.md has the measurements behind each part):
- **Whole-sequence teacher forcing.** A user's history is one row whose every item but the first
  is a target, so one forward pass trains every next-item prediction in it, as SASRec does.
- **Multi-view indexing.** With text queries, every item is taught every epoch through its views
  (title, whole text, each sentence, lead, random spans), beside the training queries.
- **What MiniLM knows.** Query embeddings enter as soft-prompt vectors; history items carry their
  projected embedding and a learned item embedding (``PromptConfig``). SID-token embeddings start
  from the quantizer's codewords (``sid_init``).
- **Epochs, not steps**: length-bucketed batches of ``batch_tokens``, AdamW with warm-up and cosine
  decay, dropout; model selection on validation Recall@10 through the service's own pipeline, with
  early stopping, an optional refit that adds the validation items, and a checkpoint per epoch.

Loss is cross-entropy over the SID range only, at the labelled positions only: exactly the
distribution the engines decode from.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers.utils import logging as transformers_logging

from indexer.collab import DIM as COLLAB_DIM
from indexer.collab import collaborative_vectors
from indexer.quantizers import load_quantizer, quantizer_class
from indexer.training.checkpoints import Checkpoints
from indexer.training.config import RULES_TEACHER_TOP, TrainConfig, dense_teacher_weight, item_loss_queries_on
from indexer.training.examples import Example, TrainingData, extend_sequences, load_training_data, text_views
from indexer.training.rows import RowMaker, make_batches, window
from indexer.training.teacher import DenseTeacher, RulesTeacher, code_targets
from indexer.training.validation import Validation, first_best, sample_cases
from model_store import Store
from sidcore.decoder.bundle import Decoder, DecoderSpec, ItemTable, make_builder, save_decoder
from sidcore.decoder.model import PromptInputs, embed_inputs, item_outputs, layer_sid_loss, load_base_model, new_tiny_model, sid_log_probs, sid_logits
from sidcore.decoder.tokenizer import extend_with_sid_tokens, load_base_tokenizer, train_text_tokenizer
from sidcore.embed import DIM, MODEL_NAME, embed_texts
from sidcore.errors import DataError
from sidcore.index.artifact import IndexArtifact, load_index
from sidcore.index.trie import Trie


def check_items(data: TrainingData, art: IndexArtifact) -> None:
    """DataError naming the training items that index ``art`` does not hold."""
    indexed = set(art.item_ids.tolist())
    named = {i for s in data.sequences for i in s} | {e.target for e in data.queries + data.valid}
    missing = sorted(named - indexed)
    if missing:
        shown = ", ".join(repr(i) for i in missing[:5])
        raise DataError(f"{len(missing)} item(s) of the training data are not in index {art.version} (e.g. {shown}): "
                        "train against the index built from this catalog")


def item_views(data: TrainingData, items: list[str], spans: int, seed: int) -> list[tuple[str, str]]:
    """(view text, item id) for every view of every item (see ``examples.text_views``)."""
    rng = np.random.default_rng(seed)
    cat = data.catalog
    out = []
    for item in items:
        i = cat.index_of[item]
        text = cat.texts[i]
        title = cat.titles[i] if cat.titles else ""
        body = text[len(title) + 2 :] if title and text.startswith(title + ". ") else ("" if text == title else text)
        views = text_views(title, body, rng, spans)
        out += [(v, item) for v in dict.fromkeys([text, *views])]
    return out


def codebook_init(model, art: IndexArtifact, base: int) -> None:
    """SID-token rows (input and output embeddings) from the quantizer's codewords, projected to the
    hidden size by PCA over all codewords and scaled to the initialiser's std (0.02)."""
    books = load_quantizer(art.path).codebook_vectors()
    allv = np.concatenate(books)
    centred = allv - allv.mean(0)
    hidden = model.config.hidden_size
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    v = centred @ vt[:hidden].T
    if v.shape[1] < hidden:
        v = np.pad(v, ((0, 0), (0, hidden - v.shape[1])))
    v = torch.from_numpy(v / v.std() * 0.02).float()
    with torch.no_grad():
        for w in (model.get_input_embeddings().weight, model.lm_head.weight):
            w[base : base + len(v)] = v.to(w.device)


def collab_init(inputs, item_ids: list[str], sequences: list[tuple[str, ...]], seed: int) -> int:
    """Learned item-embedding rows of ``inputs`` from the items' collaborative vectors over
    ``sequences`` (``indexer.collab``), zero-padded to the hidden size and scaled to the
    initialiser's std (0.02); rows of items in no sequence keep their random start. Returns how
    many rows were set."""
    weight = inputs.item.weight
    vectors, _ = collaborative_vectors(item_ids, sequences, min(64, weight.shape[1]), seed, views=("together",))
    has = np.abs(vectors).sum(1) > 0
    rows = torch.from_numpy(has).to(weight.device)
    v = torch.from_numpy(vectors[has] / vectors[has].std() * 0.02).to(weight.device)
    with torch.no_grad():
        weight[rows] = F.pad(v, (0, weight.shape[1] - v.shape[1]))
    return int(has.sum())


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def later_pairs(first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (a, b) of the P target positions of ``first`` [B, T] (bool, numbered row-major as
    ``hidden[first]`` orders them) where b is a later target of a's row: b's item follows a's next
    item. Returns two long tensors of the pairs' indices into those P positions."""
    row = first.nonzero()[:, 0]  # [P]
    idx = torch.arange(len(row), device=row.device)
    return ((row[:, None] == row[None, :]) & (idx[:, None] < idx[None, :])).nonzero(as_tuple=True)


def later_loss(logits: torch.Tensor, goal: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Mean over ``later_pairs(first)`` of -log softmax(logits[a])[goal[b]]: each of the P target
    positions (logits [P, C], goal [P] class per position) scored against what its row's later
    targets are; 0 when no row has two targets."""
    a, b = later_pairs(first)
    if not len(a):
        return logits.new_zeros(())
    return -logits.float().log_softmax(-1)[a, goal[b]].mean()


def perturb_queries(qv: torch.Tensor | None, queries: torch.Tensor, norm: float) -> torch.Tensor | None:
    """The query vectors qv [B, D] (unit rows) with a Gaussian of expected norm ``norm`` added to the
    rows that have a query (queries [B] >= 0), then renormalised; qv itself when ``norm`` is 0."""
    if qv is None or not norm:
        return qv
    noise = torch.randn_like(qv) * (norm / qv.shape[1] ** 0.5)
    return torch.where((queries >= 0).unsqueeze(1), F.normalize(qv + noise, dim=-1), qv)


class _Run:
    """One training run: its data in row form, model, optimizer and selection state."""

    def __init__(self, art: IndexArtifact, data: TrainingData, cfg: TrainConfig, base_model: Path | None, progress: bool,
                 log: Callable[[str], None], cache_dir: Path | None):
        self.art, self.data, self.cfg, self.progress, self.log = art, data, cfg, progress, log
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        items = art.item_ids.tolist()
        cat = data.catalog
        titles = {i: (cat.titles[cat.index_of[i]] if cat.titles else "") or cat.texts[cat.index_of[i]] for i in items}
        self.titles = titles
        if cat.vectors is not None:
            vectors, embedder = np.asarray(cat.vectors, dtype=np.float32)[[cat.index_of[i] for i in items]], "vectors"
        else:
            vectors, embedder = embed_texts([cat.texts[cat.index_of[i]] for i in items], cache_dir, progress=progress), MODEL_NAME
        self.items = ItemTable(items, vectors, self._collab(items, data, cfg) if "collab" in cfg.prompt.item_content else None,
                               np.asarray(art.popularity, dtype=np.float64))
        self.embeds_queries = embedder != "vectors"
        prompt = cfg.prompt
        if prompt.soft_vectors and not self.embeds_queries:
            # Queries cannot be put in the space of vectors the catalog brought: they enter as tokens.
            prompt = dataclasses.replace(prompt, soft_vectors=0, query_tokens=prompt.query_tokens or 64)
            log(f"this catalog brings its own vectors, so queries enter as tokens: soft_vectors 0, query_tokens {prompt.query_tokens}")
        self.views = item_views(data, items, cfg.pooled_spans, cfg.seed) if cfg.views else []
        self.span_pool: dict[str, list[str]] = {}  # with a rotating pool: each item's pooled spans, beside the fixed views
        if cfg.pooled_spans > cfg.view_spans and cfg.views:
            fixed = set(item_views(data, items, 0, cfg.seed))
            self.fixed_views = [v for v in self.views if v in fixed]
            for text, item in self.views:
                if (text, item) not in fixed:
                    self.span_pool.setdefault(item, []).append(text)

        texts = list(cat.texts) + [e.query for e in data.queries if e.query] + [v for v, _ in self.views]
        tok = load_base_tokenizer(base_model) if base_model is not None else train_text_tokenizer(texts, cfg.text_vocab)
        base = extend_with_sid_tokens(tok, art.sizes)
        self.tok = tok
        self.spec = DecoderSpec(art.version, art.sizes, base, prompt, str(base_model) if base_model else "tiny", art.fingerprint,
                                embedder, vectors.shape[1] if vectors is not None else DIM, sid_softmax=cfg.sid_softmax,
                                item_head_queries=bool(cfg.item_loss) and item_loss_queries_on(cfg.item_loss_queries, bool(data.sequences)))
        codes = {item: self.spec.codes(art.codes[r, : art.lengths[r]]) for r, item in enumerate(items)}
        self.maker = RowMaker(make_builder(self.spec, tok), codes, titles, self.spec.vocab.end_local,
                              query_targets=self.spec.item_head_queries)
        self.soft_id = tok.convert_tokens_to_ids("<soft>")

        self.query_row: dict[str, int] = {}
        self.query_vectors = None
        if prompt.soft_vectors and (data.queries or self.views):
            qtexts = list(dict.fromkeys([e.query for e in data.queries if e.query] + [v for v, _ in self.views]))
            self.query_row = {t: r for r, t in enumerate(qtexts)}
            self.query_vectors = torch.from_numpy(embed_texts(qtexts, cache_dir, progress=progress)).to(self.device)
        self.item_vectors = torch.from_numpy(self.items.content()).to(self.device) if "minilm" in prompt.item_content else None
        self.dense: DenseTeacher | None = None
        self.dense_weight = dense_teacher_weight(cfg.dense_teacher, quantizer_class(art.path).in_embedding_space)
        # each item's local SID codes, then <sid_end>, then -1 to the longest SID + 1 (the teachers' layout)
        self.code_table = np.full((len(items), max(len(c) for c in codes.values()) + 1), -1, dtype=np.int64)
        for r, item in enumerate(items):
            self.code_table[r, : len(codes[item]) + 1] = [*codes[item], self.spec.vocab.end_local]
        if self.dense_weight and self.query_vectors is not None:
            self.dense = DenseTeacher(torch.from_numpy(vectors).to(self.device), torch.from_numpy(self.code_table).to(self.device),
                                      self.spec.vocab.num_local, cfg.dense_temperature)
        self.trie = Trie.from_artifact(art)
        self.validation = Validation(sample_cases(data.valid, cfg.val_cases, cfg.seed), beam_width=cfg.val_beam)
        self._examples: dict[bool, tuple] = {}  # per phase (refit or not): the same every epoch
        self.teacher: RulesTeacher | None = None  # the phase's, with ``rules_teacher`` or ``rules_teacher_items``
        # the item teacher's share per item row as a target: ``rules_items_tail`` for tail items (None: 1 everywhere)
        self.teacher_share = (torch.where(torch.from_numpy(art.head), 1.0, cfg.rules_items_tail)
                              if cfg.rules_items_tail != 1 else None)
        self.base_model = base_model

    def _collab(self, items: list[str], data: TrainingData, cfg: TrainConfig) -> np.ndarray:
        """The items' collaborative vectors for ``collab`` item content, from the training sequences
        (no validation or test item: fixed before a phase adds any), the indexer's views and width per view."""
        if not data.sequences:
            raise DataError(f"item content {cfg.prompt.item_content} needs training histories (interactions); this data has none")
        vectors, stats = collaborative_vectors(items, data.sequences, COLLAB_DIM, cfg.seed)
        self.log(f"item content: collaborative vectors ({stats['dim']} wide) for {stats['items_with_vectors']} of {len(items)} items")
        return vectors

    # -- model --------------------------------------------------------------------------------
    def new_model(self, refit: bool):
        cfg = self.cfg
        if self.base_model is not None:
            model = load_base_model(self.base_model, len(self.tok))
        else:
            model = new_tiny_model(cfg.tiny, len(self.tok), self.tok.pad_token_id, cfg.seed)
        if cfg.sid_init == "codebook":
            codebook_init(model, self.art, self.spec.base)
        inputs = PromptInputs(model.config.hidden_size, self.spec.embed_dim, self.spec.prompt.soft_vectors, self.spec.prompt.item_content,
                              len(self.items.ids), self.items.collab_dim)
        if cfg.item_init == "collab" and inputs.item is not None:
            sequences = self.examples(refit)[0]
            if sequences:
                n = collab_init(inputs, self.items.ids, sequences, cfg.seed)
                self.log(f"item embeddings: {n} of {len(self.items.ids)} start from their collaborative vectors")
        return model.to(self.device), inputs.to(self.device)

    def optimizer(self, model, inputs, total_steps: int):
        decay, flat = [], []
        for module in (model, inputs):
            for name, p in module.named_parameters():
                (flat if p.ndim < 2 or "norm" in name else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": flat, "weight_decay": 0.0}],
                                lr=self.cfg.lr)
        warm = max(1, int(self.cfg.warmup * total_steps))

        def scale(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, scale)

    def decoder(self, model, inputs) -> Decoder:
        """The model being trained, as the engines see a decoder version."""
        return Decoder("(training)", self.spec, model, self.tok, self.titles, Path("."), inputs, self.items)

    # -- data ---------------------------------------------------------------------------------
    def examples(self, refit: bool) -> tuple[list[tuple[str, ...]], list[Example]]:
        """(sequences, queries) one phase trains on: a refit adds every validation example,
        ``train_valid`` those outside the sample that model selection scores."""
        if refit in self._examples:
            return self._examples[refit]
        sequences, queries = list(self.data.sequences), list(self.data.queries)
        if refit or self.cfg.train_valid:
            scored = set() if refit else set(self.validation.cases)
            valid = [e for e in self.data.valid if e not in scored]
            sequences = extend_sequences(sequences, [e for e in valid if not e.query])
            queries += [e for e in valid if e.query]
        self._examples[refit] = [s for s in sequences if len(s) >= 2], queries
        return self._examples[refit]

    def rows(self, rng: np.random.Generator, refit: bool):
        h = self.spec.prompt.history_items
        sequences, queries = self.examples(refit)
        rows = [self.maker.sequence(window(s, h, rng)) for s in sequences]
        if self.cfg.reverse_rows:
            picked = rng.permutation(len(sequences))[: round(self.cfg.reverse_rows * len(sequences))]
            rows += [self.maker.sequence(window(sequences[i], h, rng)[::-1]) for i in picked]
        rows += [self.maker.query(e.query, e.target, e.history) for e in queries] * self.cfg.query_repeats
        rows += [self.maker.query(text, item) for text, item in self.epoch_views(rng)]
        if not rows:
            raise DataError("no training rows: the data has no sequences of two or more items, no training queries and no views")
        return rows

    def epoch_views(self, rng: np.random.Generator) -> list[tuple[str, str]]:
        """(view text, item id) one epoch teaches: every view, or with ``span_pool`` the fixed
        views and ``view_spans`` of each item's pooled spans, picked afresh."""
        if not self.span_pool:
            return self.views
        out = list(self.fixed_views)
        for item, spans in self.span_pool.items():
            out += [(spans[j], item) for j in rng.permutation(len(spans))[: self.cfg.view_spans]]
        return out

    def rules_teacher(self, refit: bool) -> RulesTeacher:
        """The teacher over the sequences the phase trains on (so never a scored validation item)."""
        row = self.items.row
        sequences = [np.array([row[i] for i in s], dtype=np.int64) for s in self.examples(refit)[0]]
        return RulesTeacher(sequences, len(self.items.ids))

    def batches(self, rng: np.random.Generator, refit: bool):
        return make_batches(self.rows(rng, refit), self.cfg.batch_tokens, self.cfg.max_batch_rows, self.tok.pad_token_id,
                            self.items.row, self.query_row, rng)

    def loss(self, model, inputs, batch, progress: float) -> torch.Tensor:
        """The batch's training loss at ``progress`` (0 to 1) of the planned steps, which sets the
        item-level teacher's weight (``rules_items_end``)."""
        dev = self.device
        ids, labels, targets = batch.ids.to(dev), batch.labels.to(dev), batch.targets.to(dev)
        qv, q = None, batch.queries.to(dev)
        if self.query_vectors is not None:
            qv = torch.where((q >= 0).unsqueeze(1), self.query_vectors[q.clamp(min=0)], 0.0)
        with torch.autocast(torch.device(dev).type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            x = embed_inputs(model, inputs, ids, self.soft_id, perturb_queries(qv, q, self.cfg.query_noise), batch.content.to(dev), self.item_vectors)
            x = F.dropout(x, self.cfg.dropout, training=True)
            hidden = model.model(inputs_embeds=x, attention_mask=batch.attention.to(dev)).last_hidden_state
            at = labels >= 0
            if self.cfg.sid_softmax == "layer":
                logits = None  # the config refuses the terms that read full-range logits with it
                loss = layer_sid_loss(model, hidden[at], labels[at], self.spec.vocab, self.cfg.label_smoothing)
            else:
                logits = sid_logits(model, hidden[at], self.spec.base, self.spec.vocab.num_local)
                loss = F.cross_entropy(logits.float(), labels[at], label_smoothing=self.cfg.label_smoothing)
            if self.cfg.sid_later:
                first = targets >= 0  # within ``at``: each such position predicts its target's first code
                loss = loss + self.cfg.sid_later * later_loss(logits[first[at]], labels[first], first)
            drawn = None  # the item rows the next-item softmax ran over (None: the whole table)
            if self.cfg.item_loss:
                item_loss, drawn = self.item_loss(inputs, hidden, targets)
                loss = loss + self.cfg.item_loss * item_loss
            marked = batch.targets >= 0  # the positions that predict a target's first code
            if self.teacher is not None and marked.any():
                # the rules' scores at the history targets, the row's own later pairs taken out
                scores = self.teacher.item_scores(batch.content.numpy(), marked.numpy(), own_future=True)
                if self.cfg.rules_teacher:
                    loss = loss + self.cfg.rules_teacher * self.teacher_loss(model, hidden, batch.targets, marked, scores)
                if self.cfg.rules_items_weight:
                    share = None if self.teacher_share is None else self.teacher_share[batch.targets[marked]]
                    loss = loss + self.cfg.rules_items_weight_at(progress) * self.item_teacher_loss(inputs, hidden, marked, drawn, scores, share)
            if self.dense is not None:
                loss = loss + self.dense_weight * self.dense_loss(model, hidden, labels, q, qv)
        return loss

    def dense_loss(self, model, hidden: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, qv: torch.Tensor) -> torch.Tensor:
        """Soft cross-entropy of the SID logits at each query row's first ``dense_levels`` labelled
        positions (its target's codes, then ``<sid_end>``; hidden [B, T, H], labels [B, T]) against
        the dense teacher's distribution for its query vector (qv [B, D]; queries [B] >= 0 marks a
        query row) given the gold prefix: the mean over the rows per level, summed over levels; 0
        when the batch has none."""
        rows = (queries >= 0) & (labels >= 0).any(1)
        loss = hidden.new_zeros((), dtype=torch.float32)
        if not rows.any():
            return loss
        labels, hidden = labels[rows], hidden[rows]
        # A query row labels only its target, so its labels are contiguous: ``count`` of them from ``first``.
        first, count = (labels >= 0).int().argmax(1), (labels >= 0).sum(1)
        share = self.dense.share(qv[rows])
        for level in range(min(self.cfg.dense_levels, int(count.max()))):
            r = (count > level).nonzero()[:, 0]
            prefix = labels[r].gather(1, first[r, None] + torch.arange(level, device=labels.device))
            logp = sid_log_probs(model, hidden[r, first[r] + level], self.spec.vocab, level if self.cfg.sid_softmax == "layer" else None)
            goal = self.dense.targets(share[r], prefix)
            loss = loss - torch.where(goal > 0, goal * logp, 0.0).sum(-1).mean()
        return loss

    def teacher_loss(self, model, hidden: torch.Tensor, targets: torch.Tensor, marked: torch.Tensor, scores) -> torch.Tensor:
        """Soft cross-entropy of the SID log-probabilities at each history target's first
        ``rules_levels`` SID positions (hidden [B, T, H]; targets [B, T] item rows; a target's
        labels are contiguous from the position ``marked`` [B, T] marks) against the rules
        teacher given the gold prefix (``code_targets`` of ``scores``, csr [P, N]: its item
        scores at the P marked positions, row-major): per level the mean over the targets that
        have one, summed over levels; 0 where none has."""
        b, t = marked.nonzero(as_tuple=True)
        gold = targets[marked].numpy()
        dev = hidden.device
        loss = hidden.new_zeros((), dtype=torch.float32)
        for level in range(min(self.cfg.rules_levels, self.code_table.shape[1])):
            goal, has = code_targets(scores, gold, self.code_table, self.spec.vocab.num_local, level)
            if not has.any():
                continue
            at = hidden[b[has].to(dev), (t[has] + level).to(dev)]
            logp = sid_log_probs(model, at, self.spec.vocab, level if self.cfg.sid_softmax == "layer" else None)
            goal = goal[has].to(dev)
            loss = loss - torch.where(goal > 0, goal * logp, 0.0).sum(-1).mean()
        return loss

    def item_teacher_loss(self, inputs, hidden: torch.Tensor, marked: torch.Tensor, drawn: torch.Tensor | None, scores,
                          share: torch.Tensor | None = None) -> torch.Tensor:
        """Soft cross-entropy of the next-item head at the positions ``marked`` [B, T] (hidden
        [B, T, H]) against the rules teacher's item scores there (``scores``,
        csr [P, N], row-major; the mean over the positions the teacher scores anything at, each
        times its ``share`` [P] when given; 0 when none). The softmax runs over ``drawn`` (long
        [R], the item term's rows; None: the whole catalog) plus each position's ``RULES_TEACHER_TOP`` best-scored items, the teacher's
        scores renormalised over the same items."""
        dev = hidden.device
        if drawn is None:
            rows = np.arange(scores.shape[1])
        else:
            ends, data, indices = scores.indptr, scores.data, scores.indices
            best = [indices[a:b][np.argsort(-data[a:b])[:RULES_TEACHER_TOP]] for a, b in zip(ends[:-1], ends[1:])]
            rows = np.unique(np.concatenate([drawn.cpu().numpy(), *best]))
        goal = np.asarray(scores[:, rows].todense(), dtype=np.float32)
        has = goal.sum(1) > 0
        if not has.any():
            return hidden.new_zeros(())
        goal = torch.from_numpy(goal[has] / goal[has].sum(1, keepdims=True)).to(dev)
        keep = torch.from_numpy(has).to(dev)
        items = item_outputs(inputs, self.item_vectors, torch.from_numpy(rows).to(dev))
        logp = (hidden[marked.to(dev)][keep] @ items.T).float().log_softmax(-1)
        per = -(goal * logp).sum(-1)
        return (per if share is None else per * share.to(dev)[keep]).mean()

    def item_loss(self, inputs, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next-item term: hidden [B, T, H] at the positions whose targets [B, T] are >= 0,
        against the item table (or the batch's targets plus ``item_negatives`` drawn rows); with
        ``item_later``, plus that weight times the mean over (position, later target of its row)
        pairs of the same softmax's loss. Returns the term and the item rows its softmax ran over
        (long [R]; None: the whole table)."""
        first = targets >= 0
        if not first.any():
            return hidden.new_zeros(()), None
        rows, goal = None, targets[first]
        n, k = len(self.items.ids), self.cfg.item_negatives
        if k and k < n:
            # the batch's own targets plus a uniform sample: the softmax over them, not all items
            drawn = torch.randint(n, (k,), device=goal.device)
            rows, inverse = torch.unique(torch.cat([goal, drawn]), return_inverse=True)
            goal = inverse[: len(goal)]
        items = item_outputs(inputs, self.item_vectors, rows)  # [N or |rows|, H]
        logits = (hidden[first] @ items.T).float()  # [P, C]: P target positions, row-major
        loss = F.cross_entropy(logits, goal)
        if self.cfg.item_later:
            loss = loss + self.cfg.item_later * later_loss(logits, goal, first)
        return loss, rows

    # -- one phase: selection (validation every epoch) or refit (a fixed number of epochs) -------
    def fit(self, phase: str, epochs: int, ckpt: Checkpoints, resume: dict | None, keep: dict | None = None) -> dict:
        """Train a fresh model for up to ``epochs`` epochs (resuming ``resume`` when it is this
        phase's); ``keep`` is saved along in every checkpoint. Returns the model, its prompt inputs
        (the best epoch's when validated) and the phase's progress."""
        cfg = self.cfg
        refit = phase == "refit"
        validate = not refit and bool(self.validation.cases)
        model, inputs = self.new_model(refit)
        # without histories (a text corpus) the rules have nothing to count: no teacher, no term
        self.teacher = self.rules_teacher(refit) if (cfg.rules_teacher or cfg.rules_items_weight) and self.examples(refit)[0] else None
        steps_per_epoch = len(self.batches(np.random.default_rng(cfg.seed + 1), refit))
        total = cfg.epochs * steps_per_epoch
        opt, sched = self.optimizer(model, inputs, total)
        rng = np.random.default_rng(cfg.seed)
        st = {"phase": phase, "epoch": 0, "step": 0, "curve": [], "best": None, "bad": 0, "tokens": 0, "seconds": 0.0}
        if resume is not None and resume["phase"] == phase:
            model.load_state_dict(resume["model"])
            inputs.load_state_dict(resume["inputs"])
            opt.load_state_dict(resume["opt"])
            sched.load_state_dict(resume["sched"])
            rng.bit_generator.state = resume["rng"]
            torch.set_rng_state(resume["torch_rng"])
            st = resume["progress"]
            self.log(f"resuming {phase} after epoch {st['epoch']} from {ckpt.last}")
        while st["epoch"] < epochs and not (cfg.max_steps and st["step"] >= cfg.max_steps) and not self._stopped(st):
            epoch = st["epoch"] + 1
            model.train()
            inputs.train()
            batches = self.batches(rng, refit)
            t0 = time.perf_counter()
            losses = []
            bar = tqdm(batches, desc=f"{phase} epoch {epoch}/{epochs}", unit="step", disable=not self.progress, leave=False)
            for batch in bar:
                # the steps as the LR's schedule plans them
                loss = self.loss(model, inputs, batch, st["step"] / total)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([*model.parameters(), *inputs.parameters()], 1.0)
                opt.step()
                sched.step()
                losses.append(loss.item())
                st["step"] += 1
                st["tokens"] += batch.tokens
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
                if cfg.max_steps and st["step"] >= cfg.max_steps:
                    break
            bar.close()
            seconds = time.perf_counter() - t0
            st["seconds"] += seconds
            point = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "steps": len(losses), "seconds": round(seconds, 1)}
            if validate:
                model.eval()
                inputs.eval()
                t1 = time.perf_counter()
                point["val_recall@10"] = round(self.validation.recall(self.decoder(model, inputs), self.trie), 4)
                point["val_seconds"] = round(time.perf_counter() - t1, 1)
                best = st["best"]
                if best is None or point["val_recall@10"] > best["score"]:
                    st["best"] = {"epoch": epoch, "score": point["val_recall@10"], "model": _state(model), "inputs": _state(inputs)}
                    st["bad"] = 0
                else:
                    st["bad"] += 1
            st["epoch"] = epoch
            st["curve"].append(point)
            ckpt.save({"phase": phase, "model": model.state_dict(), "inputs": inputs.state_dict(), "opt": opt.state_dict(),
                       "sched": sched.state_dict(), "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "progress": st,
                       **(keep or {})})
            self.log(f"{phase} epoch {epoch}/{epochs}: " + ", ".join(f"{k} {v}" for k, v in point.items() if k != "epoch"))
        if st["best"] is not None:
            model.load_state_dict(st["best"]["model"])
            inputs.load_state_dict(st["best"]["inputs"])
        model.eval()
        inputs.eval()
        return {"model": model, "inputs": inputs, "progress": st}

    def choose_length_penalty(self, selection: dict) -> dict:
        """The ``cfg.length_penalties`` candidate under which the chosen epoch's decoder scores best
        on the validation cases (ties: the first; no validation: the first):
        ``{"length_penalty": lp, "val_recall@10_by_length_penalty": {lp: score}}``."""
        candidates, best = self.cfg.length_penalties, selection["progress"]["best"]
        if best is None:
            return {"length_penalty": candidates[0], "val_recall@10_by_length_penalty": {}}
        decoder = self.decoder(selection["model"], selection["inputs"])
        # The epochs were scored under the spec's penalty: that candidate's score is the best epoch's.
        scores = {lp: best["score"] if lp == self.spec.length_penalty else round(self.validation.recall(decoder, self.trie, lp), 4)
                  for lp in candidates}
        chosen = first_best(candidates, {lp: (score,) for lp, score in scores.items()})
        self.log("length penalty on validation: " + ", ".join(f"{lp:g} -> {s}" for lp, s in scores.items()) + f"; chosen {chosen:g}")
        return {"length_penalty": chosen, "val_recall@10_by_length_penalty": {f"{lp:g}": s for lp, s in scores.items()}}

    def choose_item_weight(self, selection: dict) -> dict:
        """After the length penalty, the ``cfg.item_priors`` x ``cfg.item_weights`` pair under which
        the chosen decoder scores best on the validation cases: Recall@10, ties broken by MRR@10,
        then the first (priors outer; a positive weight where the head was trained on text prompts,
        ``item_head_queries``); weight 0 ranks without the head, so it is scored once, under the
        first prior. 0 and 0 unless the next-item head was trained (``item_loss`` with history
        rows, or on text prompts too): ``{"item_weight": w, "item_prior": p,
        "val_recall@10_by_item_weight": {w: recall}, "val_mrr@10_by_item_weight": {w: mrr}}`` (at
        the chosen prior) and ``"val_recall@10_by_item_prior": {p: recall at its best weight}``."""
        weights, priors, progress = self.cfg.item_weights, self.cfg.item_priors, selection["progress"]
        trained = self.cfg.item_loss and (self.spec.item_head_queries or self.examples(refit=False)[0])
        if progress["best"] is None or not trained:
            return {"item_weight": 0.0, "item_prior": 0.0, "val_recall@10_by_item_weight": {}, "val_mrr@10_by_item_weight": {},
                    "val_recall@10_by_item_prior": {}}
        lp = progress["length_penalty"]
        decoder = self.decoder(selection["model"], selection["inputs"])
        scores: dict[tuple[float, float], tuple[float, float]] = {}
        for n, prior in enumerate(priors):
            scored = weights if n == 0 else [w for w in weights if w > 0]
            measured = self.validation.measure_weights(decoder, self.trie, lp, scored, prior) if scored else {}
            scores.update({(prior, w): (round(r, 4), round(m, 4)) for w, (r, m) in measured.items()})
        # A head trained on text prompts is chosen among the positive weights: on scifact's 324
        # selection claims weight 0 was 0.06-0.12 behind every positive one at both seeds, while a
        # decoder's own ~60 validation claims, near 0.85 at 20 beams, tie them or split by one claim.
        positive_only = self.spec.item_head_queries and any(weights)
        eligible = [pw for pw in scores if pw[1] > 0 or not positive_only]
        prior, chosen = first_best(eligible, scores)
        at = {w: scores[(prior, w)] if w > 0 else scores[(priors[0], w)] for w in weights}
        by_prior = {p: max(r for (q, w), (r, _) in scores.items() if q == p or w == 0) for p in priors}
        self.log("item weight on validation (R@10, MRR@10): " + ", ".join(f"{w:g} -> {r}, {m}" for w, (r, m) in at.items())
                 + (f" (prior {prior:g}; best R@10 by prior: " + ", ".join(f"{p:g} -> {r}" for p, r in by_prior.items()) + ")"
                    if len(priors) > 1 else "") + f"; chosen {chosen:g}")
        return {"item_weight": chosen, "item_prior": prior if chosen > 0 else 0.0,
                "val_recall@10_by_item_weight": {f"{w:g}": r for w, (r, _) in at.items()},
                "val_mrr@10_by_item_weight": {f"{w:g}": m for w, (_, m) in at.items()},
                "val_recall@10_by_item_prior": {f"{p:g}": r for p, r in by_prior.items()}}

    def _stopped(self, st: dict) -> bool:
        return bool(self.cfg.patience) and st["best"] is not None and st["bad"] >= self.cfg.patience


def train_decoder(
    store: Store,
    data_dir: str | Path,
    cfg: TrainConfig = TrainConfig(),
    index_version: str | None = None,
    base_model: Path | None = None,
    data: TrainingData | None = None,
    progress: bool = True,
    cache_dir: Path | None = None,
    checkpoints: Path | None = None,
    restart: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[str, dict]:
    """Train on ``data_dir`` (or pre-loaded ``data``) for an index version; returns (version, summary).

    ``checkpoints``: the run's checkpoint folder (default: ``<store>/checkpoints/decoder-<index version>``);
    an interrupted run started again with the same settings resumes after its last finished epoch,
    ``restart`` discards what is there. ``cache_dir``: the embedding cache (as for indexing).
    """
    art = load_index(store, index_version)
    data = data or load_training_data(data_dir, seed=cfg.seed)
    check_items(data, art)
    if not progress:
        transformers_logging.disable_progress_bar()
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    run = _Run(art, data, cfg, base_model, progress, log, cache_dir)
    description = {"train": dataclasses.asdict(cfg), "index_version": art.version, "data": str(Path(data_dir).resolve()),
                   "base_model": str(base_model) if base_model else None}
    ckpt = Checkpoints(checkpoints or store.root / "checkpoints" / f"decoder-{art.version}", description, restart)
    resume = ckpt.load()
    if resume is not None and resume["phase"] == "refit":
        selection = resume["selection"]  # selection finished before the interruption
    else:
        selection = run.fit("select", cfg.epochs, ckpt, resume)
        selection["progress"].update(run.choose_length_penalty(selection))
        selection["progress"].update(run.choose_item_weight(selection))
    final = selection
    if cfg.refit and selection["progress"]["best"] is not None:
        final = run.fit("refit", selection["progress"]["best"]["epoch"], ckpt, resume,
                        keep={"selection": {"progress": {**selection["progress"], "best": {**selection["progress"]["best"], "model": None, "inputs": None}}}})
    chosen, phases = selection["progress"], [selection["progress"]] + ([final["progress"]] if final is not selection else [])
    best = chosen["best"]
    train_seconds = sum(p["seconds"] for p in phases)
    summary = {
        "epochs_run": chosen["epoch"],
        "best_epoch": best["epoch"] if best else None,
        "val_recall@10": best["score"] if best else None,
        "val_cases": len(run.validation.cases),
        "length_penalty": chosen["length_penalty"],
        "val_recall@10_by_length_penalty": chosen["val_recall@10_by_length_penalty"],
        "item_weight": chosen["item_weight"],
        "val_recall@10_by_item_weight": chosen["val_recall@10_by_item_weight"],
        "val_mrr@10_by_item_weight": chosen.get("val_mrr@10_by_item_weight", {}),  # absent in checkpoints before stop 52
        "item_prior": chosen.get("item_prior", 0.0),  # absent in checkpoints before stop 64
        "val_recall@10_by_item_prior": chosen.get("val_recall@10_by_item_prior", {}),
        "refit_epochs": final["progress"]["epoch"] if final is not selection else None,
        "curve": chosen["curve"],
        "steps": sum(p["step"] for p in phases),
        "final_loss": chosen["curve"][-1]["loss"] if chosen["curve"] else None,
        "sequence_rows": len(run.examples(refit=False)[0]),
        "query_rows": len(data.queries) * cfg.query_repeats,
        "view_rows": len(run.epoch_views(np.random.default_rng(cfg.seed))),
        "tokens_per_s": round(sum(p["tokens"] for p in phases) / max(train_seconds, 1e-9)),
        "steps_per_s": round(sum(p["step"] for p in phases) / max(train_seconds, 1e-9), 2),
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    model, inputs = final["model"], final["inputs"]
    config = {"index_version": art.version, "index_fingerprint": art.fingerprint, "train": dataclasses.asdict(cfg),
              "base_model": run.spec.model, "summary": summary}
    with store.new_version("decoder", config) as d:
        spec = dataclasses.replace(run.spec, length_penalty=chosen["length_penalty"], item_weight=chosen["item_weight"],
                                   item_prior=chosen.get("item_prior", 0.0))
        save_decoder(d, spec, model.to("cpu"), run.tok, run.titles, inputs.to("cpu"), run.items)
    ckpt.remove()
    return store.last_version, summary

