"""Decoder training settings (importable without torch: the CLI builds them before training starts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sidcore.decoder.config import SID_SOFTMAX, TinyConfig
from sidcore.decoder.prompt import PromptConfig
from sidcore.errors import DataError

# The rules teacher's best items per position that join the next-item softmax of ``rules_teacher_items``:
# on games a uniform draw of 2,048 of the 16,859 items holds an eighth of a position's teacher mass, its
# own best 32 a fifth more, and the batch's other positions' best items add their share
# (benchmarks/probe_teacher_mass.py).
RULES_TEACHER_TOP = 32


@dataclass(frozen=True)
class TrainConfig:
    """Decoder training.

    Args:
        epochs: most passes over the training rows.
        patience: stop after this many epochs without a better validation Recall@10 (0, the
            default: run every epoch of the schedule); the best epoch's weights are kept either
            way. On games' validation users two flat epochs are noise as often as a plateau, and
            stopping there, mid-way down the cosine, kept an early epoch (docs/evaluation.md).
        batch_tokens: padded tokens per batch (rows of similar length are batched together).
        max_batch_rows: rows per batch at most (short query rows would otherwise make huge batches).
        lr: peak AdamW learning rate (warm-up then cosine decay to 0); ~2e-5 suits a pretrained base.
        warmup: share of the steps spent warming up.
        weight_decay: AdamW weight decay (not on norms, biases and embeddings of one dimension).
        dropout: dropout on the input embeddings (attention dropout is ``tiny.attention_dropout``).
        label_smoothing: share of each SID target's probability spread evenly over the SID range in
            the SID loss (0: off). The training loss keeps falling after validation has levelled
            off; smoothing caps how sure the decoder gets of each code, and beam scores add those
            log-probabilities up.
        sid_softmax: what each SID position's distribution is normalised over, in training and
            then in decoding (stored with the decoder): ``full``, the whole SID range, every
            layer's codes and ``<sid_end>``; ``layer``, only the ids the position can hold (its
            layer's codes, and ``<sid_end>`` after the first), the set the trie's allowed children
            always fall in. ``layer`` scores a quarter of the logits with three layers; the SID
            head is most of a tiny decoder's work, so an epoch is cheaper. The rules and
            later-codes terms read full-range logits and need ``full``.
        bf16: run the forward pass under bfloat16 autocast (on GPUs and CPUs with AMX; on CPUs
            without bf16 units it is several times slower, see docs/benchmarks.md).
        item_loss: weight of an auxiliary next-item loss (0: off): in history rows, at each
            position that predicts a target's first code, a softmax over the catalog's items,
            scored against the items as history markers carry them (``--item-content``: projected
            MiniLM and/or learned embedding), as SASRec trains. It shapes the hidden state, and
            the head it trains re-ranks a history request's decoded items (``item_weights``).
        item_loss_queries: apply ``item_loss`` to query and view rows too (the position that
            predicts their target's first code), not only to history rows; the head then
            re-ranks text-only requests' decoded items as well (``DecoderSpec.item_head_queries``).
            ``None`` (the default): on where the training data has no histories (a text corpus
            such as scifact's claims), off where it has them (``item_loss_queries_on``).
        item_negatives: with ``item_loss``, score each batch's targets against themselves and this
            many uniformly drawn items instead of the whole catalog (0: the whole catalog).
        item_later: weight of a term beside ``item_loss`` (0: off): each of those positions also
            scores, with the same softmax, every item that follows the next one in the row, the
            mean over such pairs. A user's later items say what co-occurs with the prefix, which
            the count-based rules baseline lives on; the next-item term alone sees each pair once.
        sid_later: weight of a term beside the SID loss (0: off): at each history position that
            predicts a target's first code, the first code of every later item of the row too
            (the mean over such pairs), so the first code, which decides the beams, learns what
            co-occurs with the prefix and not only what comes next.
        reverse_rows: share of the training sequences also trained newest-first each epoch (a
            seeded pick per epoch): items a user took *before* another are related to it too,
            which the count-based rules use (their ``reverse`` weight) and forward rows never show.
        rules_teacher: weight of a distillation term beside the SID loss (0: off): at each history
            position that predicts a target's first code, a soft cross-entropy against the count-based
            rules' scores of every item given the row's items so far, the row's own later items taken
            out of the counts, summed per first code (``indexer.training.teacher``). The rules'
            exact per-pair memory as a target of the beams; training only.
        rules_levels: SID positions ``rules_teacher`` targets, first code first: at level l > 0 its
            target is the rules' scores of the items that start with the target's gold prefix,
            summed per code at l (``<sid_end>`` where a SID ends), so the teacher orders a first
            code's members too. 1: the first code only.
        rules_teacher_items: weight of a distillation term beside ``item_loss`` (0: off; ``None``,
            the default: 4 with ``item_loss`` since stop 61, 2 at stops 59-60, else 0; it acts only where the training
            data has histories, ``rules_items_weight``): at each history
            position that predicts a target, a soft cross-entropy of the next-item head's softmax
            against the count-based rules' score of each item given the row so far, the row's own
            later items taken out of the counts. The softmax runs over the item term's drawn items
            and the batch's targets plus the teacher's ``RULES_TEACHER_TOP`` best items of each
            position. On games' validation users, after the item weight, weight 1 lifted Recall@10
            from 0.1210 / 0.1225 to 0.132 / 0.131 at seeds 0 / 1, weight 2 to 0.1425 / 0.1315;
            weight 4 was ahead of 2 by +0.0025, +0.002 and +0.0055 at seeds 0, 1 and 2
            (docs/evaluation.md). Training only.
        rules_items_end: the item-level teacher's weight at the last planned step, as a share of
            ``rules_teacher_items`` (its weight at the first), linear in between (1: constant;
            above 1: rising). The teacher hands the head the rules' memory early; a lower weight
            late lets the data's own next items decide what the chosen epoch keeps, a higher one
            leans on the rules most where the decoder has learnt the most. On games' validation
            both were behind the constant weight 4: from 4 to 0 by 0.007, from 2 to 6 by 0.004 on
            the mean of two seeds (docs/evaluation.md).
        rules_items_tail: the item-level teacher's weight at positions whose next item is a tail
            item of the index (its head flag), as a share of its weight elsewhere (1: the same; 0:
            none there). The rules' counts favour head items, so at a tail target the teacher
            pulls the head away from the very item the data names. At 0, games' seed-2 validation
            was level (0.1355 against 0.1350) and its tail one user behind (docs/evaluation.md).
        dense_teacher: weight of a distillation term beside the SID loss (0: off; ``None``: 1 where
            the codes come from a learned latent (RQ-VAE and its ACRQ forms), 0 where they are
            k-means of the item vectors themselves, whose codebook-started SID embeddings already
            carry MiniLM's neighbourhoods; ``dense_teacher_weight``): at each query or
            view row's first-code position, a soft cross-entropy against MiniLM's own ranking of
            the catalog for that text (softmax of cosine / ``dense_temperature``, summed per first
            code), so the decoder learns the neighbourhoods that let dense retrieval reach
            documents no training query cites. Training only: ranking stays the SID scores. It
            needs queries embedded by MiniLM (text queries or views, no ``--vectors``); with
            histories alone it acts on the items' views (on games, their titles).
        dense_temperature: the teacher's softmax temperature over cosine similarities.
        dense_levels: SID positions the dense teacher targets, first code first: at level l > 0
            its target is the share of the items that start with the row's gold prefix, summed
            per code at l (``<sid_end>`` where a SID ends), so the teacher orders a first code's
            members by the text as well. 1: the first code only.
        query_noise: norm of a Gaussian perturbation added to each training query vector before its
            soft vectors are made (the vector renormalised after; 0: off). A tail document is
            taught only through its own views, while the claims that find it at test time sit
            near those views in MiniLM's space, not on them: the perturbation trains the decoder
            on a neighbourhood of each view. The dense teacher still reads the clean vector.
        query_repeats: times each training query is seen per epoch.
        views: teach every item through its text views each epoch (title, text, sentences, lead,
            spans), so text queries reach every item, tail and cold-start included.
        view_spans: random word spans per item among its views each epoch (from ``span_pool``).
            6 since stop 42: ahead of 2 on a 324-claim selection split of scifact's training
            claims, on the mean of three seeds (docs/evaluation.md).
        span_pool: spans drawn per item once per run and embedded once; each epoch then teaches
            ``view_spans`` of them, picked afresh, so the decoder sees more of a document's text
            over a run at the same steps per epoch (at most ``view_spans``, 0 included: the same
            spans every epoch). 18 since stop 43: ahead of a fixed six on the mean of three seeds
            of the 324-claim selection split at both cut-offs (docs/evaluation.md); embedding the
            pool costs once per run, about three times the fixed spans' texts.
        sid_init: ``codebook``: SID-token embeddings (input and output) start from the quantizer's
            codewords, projected to the hidden size by PCA; ``random``: normal(0, 0.02).
        item_init: the learned item embeddings (``id`` item content): ``collab`` starts each from its
            collaborative vector over the phase's training sequences (PPMI of co-occurrence, SVD;
            ``indexer.collab``), padded to the hidden size and scaled as ``random``'s, so items
            bought together start close, which the count-based rules live on; ``random``:
            normal(0, 0.02). Items in no training sequence keep a random start.
        val_cases: validation examples scored after each epoch (a seeded sample; 0: no selection).
            2,000, as the baselines use: on games 500 cases have a standard error of ~0.012,
            larger than most epoch-to-epoch changes, and stopped training at a worse epoch.
        val_beam: beams when scoring them.
        length_penalties: the SID-score length penalties (scores divided by ``(length + 1) ** lp``)
            the chosen epoch's decoder is scored at on the same validation cases; the best is
            stored with the decoder and the engines use it (ties go to the first; without
            validation cases the first). SARQ gives dense regions longer SIDs, and a penalty that
            lifts them helps where the head is queried by text (scifact's selection claims: 1 ahead
            at R@10 at three seeds of three) and hurts histories (games' validation users: 1
            behind by 0.014), so each decoder takes what its own validation says (stop 46).
        item_weights: after the length penalty, the weights W of the next-item head the chosen
            decoder is scored at (a history request's decoded items, and a text request's under
            ``item_loss_queries``, ranked by SID score + W x item-head logit, ``Retriever``); the
            best by Recall@10 is stored and served (ties broken by MRR@10, then the first; only
            the positive ones compete where the head was trained on text prompts). Only where the
            head was trained (``item_loss`` > 0 with history rows, or ``item_loss_queries``);
            otherwise 0. On games' validation users SA²CRQ's decoders chose 0.25 and 1 at two
            seeds, +0.009 and +0.0065 over SID scores alone (stop 50); 2 and 4 joined when
            half of stop 52's choices sat at 1, the top of the grid (stop 53).
        item_priors: with each positive item weight, the popularity adjustments p of the item head
            the chosen decoder is scored at: its logits, where they rank and propose items, lowered
            by p x each item's log share of the training interactions (logit adjustment: the
            head's lift over popularity); the best (prior, weight) pair is stored and served
            (ties: the first prior). The head learns the data's popularity, and the rules teacher
            the counts' own, so a tail target loses to the popular items the history also fits.
            On games' validation users a small prior traded head users for tail ones about one
            for one; chosen per decoder, the grid 0, 0.1, 0.25, 0.5, 1 was behind the weights
            alone two-fold at three seeds (stop 64), so only 0 is scored by default.
        refit: after selection, retrain from scratch for the best number of epochs with the
            validation items added to the training data.
        train_valid: train on every validation example outside the sample that ``val_cases``
            scores, from the first epoch (a history's validation item continues its training
            sequence): the newest interaction of nearly every user is learnt, and model selection
            stays honest on the users held out. One run, where ``refit`` takes two.
        max_steps: stop after this many optimizer steps (0: no cap); for smoke runs.
        text_vocab: size of the tiny tokenizer's text vocabulary.
        seed: data order, initialisation, view spans, validation sample.
        tiny: the default model shape (ignored with a base model).
        prompt: the prompt layout and caps.
    """

    epochs: int = 8
    patience: int = 0
    batch_tokens: int = 4096
    max_batch_rows: int = 128
    lr: float = 2e-3
    warmup: float = 0.03
    weight_decay: float = 0.01
    dropout: float = 0.1
    label_smoothing: float = 0.0
    sid_softmax: Literal["full", "layer"] = "full"
    item_loss: float = 1.0
    item_negatives: int = 2048
    item_loss_queries: bool | None = None
    item_later: float = 0.0
    sid_later: float = 0.0
    reverse_rows: float = 0.0
    rules_teacher: float = 0.0
    rules_levels: int = 1
    rules_teacher_items: float | None = None
    rules_items_end: float = 1.0
    rules_items_tail: float = 1.0
    dense_teacher: float | None = None
    dense_temperature: float = 0.05
    dense_levels: int = 1
    query_noise: float = 0.0
    bf16: bool = False
    query_repeats: int = 4
    views: bool = True
    view_spans: int = 6
    span_pool: int = 18
    sid_init: Literal["codebook", "random"] = "codebook"
    item_init: Literal["collab", "random"] = "random"
    val_cases: int = 2000
    val_beam: int = 20
    length_penalties: tuple[float, ...] = (0.0, 1.0)
    item_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    item_priors: tuple[float, ...] = (0.0,)
    refit: bool = False
    train_valid: bool = True
    max_steps: int = 0
    text_vocab: int = 4096
    seed: int = 0
    tiny: TinyConfig = field(default_factory=TinyConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_tokens": self.batch_tokens, "max_batch_rows": self.max_batch_rows,
                    "query_repeats": self.query_repeats, "val_beam": self.val_beam}
        for name, value in positive.items():
            if value < 1:
                raise DataError(f"{name} must be positive, got {value}")
        for name, value in {"patience": self.patience, "val_cases": self.val_cases, "max_steps": self.max_steps,
                            "view_spans": self.view_spans, "span_pool": self.span_pool, "item_negatives": self.item_negatives}.items():
            if value < 0:
                raise DataError(f"{name} must be >= 0, got {value}")
        if not self.length_penalties or not all(0 <= lp < float("inf") for lp in self.length_penalties):
            raise DataError(f"length_penalties must be one or more finite numbers >= 0, got {self.length_penalties}")
        if not self.item_weights or not all(0 <= w < float("inf") for w in self.item_weights):
            raise DataError(f"item_weights must be one or more finite numbers >= 0, got {self.item_weights}")
        if not self.item_priors or not all(0 <= p < float("inf") for p in self.item_priors):
            raise DataError(f"item_priors must be one or more finite numbers >= 0, got {self.item_priors}")
        if not 0 <= self.reverse_rows <= 1:
            raise DataError(f"reverse_rows must be in [0, 1], got {self.reverse_rows}")
        if self.lr <= 0 or not 0 <= self.warmup < 1 or self.weight_decay < 0 or not 0 <= self.dropout < 1:
            raise DataError("lr must be positive, warmup and dropout in [0, 1), weight_decay >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise DataError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name, value in {"item_loss": self.item_loss, "item_later": self.item_later, "sid_later": self.sid_later,
                            "rules_teacher": self.rules_teacher, "rules_teacher_items": self.rules_teacher_items or 0.0,
                            "dense_teacher": self.dense_teacher or 0.0, "rules_items_end": self.rules_items_end,
                            "query_noise": self.query_noise}.items():
            if value < 0 or not value < float("inf"):
                raise DataError(f"{name} must be >= 0, got {value}")
        if not 0 <= self.rules_items_tail <= 1:
            raise DataError(f"rules_items_tail must be in [0, 1], got {self.rules_items_tail}")
        if not self.dense_temperature > 0:
            raise DataError(f"dense_temperature must be > 0, got {self.dense_temperature}")
        for name, value in {"dense_levels": self.dense_levels, "rules_levels": self.rules_levels}.items():
            if value < 1:
                raise DataError(f"{name} must be >= 1, got {value}")
        if self.item_later and not self.item_loss:
            raise DataError("item_later scores later items with the next-item softmax: it needs --item-loss > 0")
        if self.rules_teacher_items and not self.item_loss:
            raise DataError("rules_teacher_items distils into the next-item softmax: it needs --item-loss > 0 (or --rules-teacher-items 0)")
        if self.item_loss and self.prompt.item_content == "none":
            raise DataError("item_loss needs item content to score items against: use --item-content minilm, id or minilm+id, or --item-loss 0")
        if self.sid_softmax not in SID_SOFTMAX:
            raise DataError(f"sid_softmax must be one of {', '.join(SID_SOFTMAX)}, got {self.sid_softmax!r}")
        if self.sid_softmax == "layer" and self.sid_later:
            raise DataError("sid_later reads the full SID range's logits: use it with sid_softmax full")
        if self.sid_init not in ("codebook", "random"):
            raise DataError(f"sid_init must be codebook or random, got {self.sid_init!r}")
        if self.item_init not in ("collab", "random"):
            raise DataError(f"item_init must be collab or random, got {self.item_init!r}")
        if self.item_init == "collab" and "id" not in self.prompt.item_content.split("+"):
            raise DataError("item_init collab starts the learned item embeddings: it needs --item-content id or minilm+id")

    @property
    def rules_items_weight(self) -> float:
        """The item-level rules teacher's weight: ``rules_teacher_items`` when given, else 4 where
        there is a next-item head to distil into."""
        if self.rules_teacher_items is not None:
            return self.rules_teacher_items
        return 4.0 if self.item_loss else 0.0

    def rules_items_weight_at(self, progress: float) -> float:
        """The item-level teacher's weight at ``progress`` (0 to 1) of the planned steps: linear from
        ``rules_items_weight`` to ``rules_items_end`` of it."""
        return self.rules_items_weight * (1 - (1 - self.rules_items_end) * min(progress, 1.0))

    @property
    def pooled_spans(self) -> int:
        """Spans drawn per item: ``span_pool`` when it rotates (above ``view_spans``), else ``view_spans``."""
        return self.span_pool if self.view_spans and self.span_pool > self.view_spans else self.view_spans


def item_loss_queries_on(setting: bool | None, has_histories: bool) -> bool:
    """Whether query and view rows get the next-item loss: ``setting`` when given, else only where
    there are no histories. On scifact's selection claims the head it trains, fused with the SID
    scores, lifted Recall@10 from 0.776 to 0.831 (stop 51); where histories train the head, view rows
    would also pull it toward the item a title names, which no games run has measured."""
    return setting if setting is not None else not has_histories


def dense_teacher_weight(setting: float | None, codes_in_embedding_space: bool) -> float:
    """The dense teacher's weight: ``setting`` when given, else 1 for codes of a learned latent and
    0 for codes in the embedding space itself (``Quantizer.in_embedding_space``)."""
    if setting is not None:
        return setting
    return 0.0 if codes_in_embedding_space else 1.0
