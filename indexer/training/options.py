"""The decoder-training options every command shares (``decoder train``, ``eval``, ``demo``), as
one click decorator and one place that turns them into a ``TrainConfig``."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import click

from indexer.training.config import TrainConfig
from sidcore.decoder.config import SID_SOFTMAX
from sidcore.decoder.prompt import CONTENT

_DEFAULT = TrainConfig()


def _options(epochs_flag: str) -> list:
    d, p, t = _DEFAULT, _DEFAULT.prompt, _DEFAULT.tiny
    return [
        click.option(epochs_flag, "train_epochs", type=click.IntRange(min=1), default=d.epochs, show_default=True,
                     help="Decoder epochs at most (it stops earlier when validation Recall@10 stops improving)."),
        click.option("--patience", "train_patience", type=click.IntRange(min=0), default=d.patience, show_default=True,
                     help="Decoder epochs without a better validation Recall@10 before stopping (0: run them all)."),
        click.option("--batch-tokens", "train_batch_tokens", type=click.IntRange(min=1), default=d.batch_tokens, show_default=True,
                     help="Padded tokens per decoder batch."),
        click.option("--lr", "train_lr", type=click.FloatRange(0, min_open=True),
                     help=f"Peak decoder learning rate. Default {d.lr:g} (tiny) / 2e-5 (base model)."),
        click.option("--weight-decay", "train_weight_decay", type=click.FloatRange(min=0), default=d.weight_decay, show_default=True,
                     help="AdamW weight decay of the decoder's matrices (not on norms and biases)."),
        click.option("--dropout", "train_dropout", type=click.FloatRange(0, 1, max_open=True), default=d.dropout, show_default=True,
                     help="Dropout on the decoder's input embeddings while training."),
        click.option("--attention-dropout", "tiny_attention_dropout", type=click.FloatRange(0, 1, max_open=True),
                     default=t.attention_dropout, show_default=True, help="Dropout on the tiny decoder's attention weights while training."),
        click.option("--label-smoothing", "train_label_smoothing", type=click.FloatRange(0, 1, max_open=True), default=d.label_smoothing,
                     show_default=True, help="Share of each SID target's probability spread over the SID range in the SID loss (0: off)."),
        click.option("--sid-softmax", "train_sid_softmax", type=click.Choice(SID_SOFTMAX), default=d.sid_softmax, show_default=True,
                     help="What each SID position's distribution is normalised over, in training and serving: the whole SID range, "
                          "or the ids its layer can hold (cheaper)."),
        click.option("--bf16/--fp32", "train_bf16", default=d.bf16, show_default=True,
                     help="bfloat16 autocast in training (GPUs, CPUs with AMX); fp32 is faster on CPUs without bf16 units."),
        click.option("--max-steps", "train_max_steps", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Stop decoder training after this many steps (0: no cap); for smoke runs."),
        click.option("--refit/--no-refit", "train_refit", default=d.refit, show_default=True,
                     help="After selection, retrain for the best number of epochs with the validation items added."),
        click.option("--train-valid/--no-train-valid", "train_train_valid", default=d.train_valid, show_default=True,
                     help="Train on the validation items of every user outside the scored validation sample."),
        click.option("--views/--no-views", "train_views", default=d.views, show_default=True,
                     help="Teach every item through its text views (title, text, sentences, spans) each epoch."),
        click.option("--view-spans", "train_view_spans", type=click.IntRange(min=0), default=d.view_spans, show_default=True,
                     help="Random word spans per item among its text views each epoch (from --span-pool; seeded)."),
        click.option("--span-pool", "train_span_pool", type=click.IntRange(min=0), default=d.span_pool, show_default=True,
                     help="Spans drawn per item once per run; each epoch teaches --view-spans of them, picked afresh (at most --view-spans: the same spans every epoch)."),
        click.option("--query-repeats", "train_query_repeats", type=click.IntRange(min=1), default=d.query_repeats, show_default=True,
                     help="Times each training query is seen per epoch."),
        click.option("--item-loss", "train_item_loss", type=click.FloatRange(min=0), default=d.item_loss, show_default=True,
                     help="Weight of the auxiliary next-item softmax at each target (0: off); shapes training only, ranking stays the SID scores."),
        click.option("--item-negatives", "train_item_negatives", type=click.IntRange(min=0), default=d.item_negatives, show_default=True,
                     help="Items drawn per batch for the next-item softmax, beside the batch's targets (0: the whole catalog)."),
        click.option("--item-later", "train_item_later", type=click.FloatRange(min=0), default=d.item_later, show_default=True,
                     help="Weight of a term that asks each next-item position for every later item of the row too (0: off)."),
        click.option("--sid-later", "train_sid_later", type=click.FloatRange(min=0), default=d.sid_later, show_default=True,
                     help="Weight of a term that asks each history target's first-code position for the first codes of the row's later items too (0: off)."),
        click.option("--rules-teacher", "train_rules_teacher", type=click.FloatRange(min=0), default=d.rules_teacher, show_default=True,
                     help="Weight of a term that distils the count-based rules' scores, summed per first code, into each history target's first-code position (0: off)."),
        click.option("--rules-levels", "train_rules_levels", type=click.IntRange(min=1), default=d.rules_levels, show_default=True,
                     help="SID positions the rules teacher (--rules-teacher) targets, first code first (deeper ones: given the gold prefix)."),
        click.option("--rules-teacher-items", "train_rules_teacher_items", type=click.FloatRange(min=0), default=None,
                     help="Weight of a term that distils the count-based rules' scores per item into the next-item head, where histories train it "
                          "(0: off; needs --item-loss > 0). Default: 4 with the next-item loss, else 0."),
        click.option("--rules-teacher-items-end", "train_rules_items_end", type=click.FloatRange(min=0), default=d.rules_items_end, show_default=True,
                     help="The item-level rules teacher's weight at the last planned step, as a share of its first (linear in between; 1: constant; above 1: rising)."),
        click.option("--rules-teacher-items-tail", "train_rules_items_tail", type=click.FloatRange(0, 1), default=d.rules_items_tail, show_default=True,
                     help="The item-level rules teacher's weight where the next item is a tail item of the index, as a share of its weight elsewhere (0: none there)."),
        click.option("--dense-teacher", "train_dense_teacher", type=click.FloatRange(min=0), default=None,
                     help="Weight of a term that distils MiniLM's ranking of the catalog, summed per first code, into each query or view row's first-code position "
                          "(0: off; with histories alone it acts on the items' title views). Default: 1 for RQ-VAE-based codes, 0 for RQ-Kmeans-based ones."),
        click.option("--dense-temperature", "train_dense_temperature", type=click.FloatRange(min=0, min_open=True), default=d.dense_temperature,
                     show_default=True, help="Softmax temperature of the dense teacher over cosine similarities."),
        click.option("--dense-levels", "train_dense_levels", type=click.IntRange(min=1), default=d.dense_levels, show_default=True,
                     help="SID positions the dense teacher targets, first code first (deeper ones: given the gold prefix)."),
        click.option("--query-noise", "train_query_noise", type=click.FloatRange(min=0), default=d.query_noise, show_default=True,
                     help="Norm of the Gaussian noise added to each training query vector before its soft vectors (0: off)."),
        click.option("--reverse-rows", "train_reverse_rows", type=click.FloatRange(0, 1), default=d.reverse_rows, show_default=True,
                     help="Share of the training histories also trained newest-first each epoch (0: none)."),
        click.option("--item-loss-queries/--no-item-loss-queries", "train_item_loss_queries", default=None,
                     help="Apply the next-item loss to query and view rows too, not only to history rows, so its head also re-ranks text requests. "
                          "Default: on where the data has no histories (a text corpus), off where it has them."),
        click.option("--val-cases", "train_val_cases", type=click.IntRange(min=0), default=d.val_cases, show_default=True,
                     help="Validation cases scored after each decoder epoch (0: no model selection)."),
        click.option("--length-penalties", "train_length_penalties", callback=_nonnegative_numbers, default=",".join(f"{lp:g}" for lp in d.length_penalties),
                     show_default=True, help="Length penalties the chosen decoder is scored at on its validation cases, comma-separated; "
                                             "the best is stored with it and served (ties: the first)."),
        click.option("--item-weights", "train_item_weights", callback=_nonnegative_numbers, default=",".join(f"{w:g}" for w in d.item_weights),
                     show_default=True, help="Weights of the next-item head's logit beside the SID score that the chosen decoder is "
                                             "scored at on its validation cases (history requests; text requests too where it was trained on "
                                             "them), comma-separated; the best is stored with it and served (ties: the better MRR@10, "
                                             "then the first; 0: SID scores alone)."),
        click.option("--item-priors", "train_item_priors", callback=_nonnegative_numbers, default=",".join(f"{p:g}" for p in d.item_priors),
                     show_default=True, help="Popularity adjustments of the next-item head scored with each positive item weight, "
                                             "comma-separated: its logits lowered by this times each item's log share of the training "
                                             "interactions; the best pair is stored with the decoder and served (ties: the first; 0: none)."),
        click.option("--sid-init", "train_sid_init", type=click.Choice(["codebook", "random"]), default=d.sid_init, show_default=True,
                     help="SID-token embeddings from the quantizer's codewords, or random."),
        click.option("--item-init", "train_item_init", type=click.Choice(["collab", "random"]), default=d.item_init, show_default=True,
                     help="Learned item embeddings from the training sequences' collaborative vectors (co-occurrence), or random."),
        click.option("--history-items", "prompt_history_items", type=click.IntRange(min=1), default=p.history_items, show_default=True,
                     help="Newest history items in a prompt."),
        click.option("--query-tokens", "prompt_query_tokens", type=click.IntRange(min=0), default=p.query_tokens, show_default=True,
                     help="Query tokens in a prompt (0: the query enters through its soft vectors only)."),
        click.option("--soft-vectors", "prompt_soft_vectors", type=click.IntRange(min=0), default=p.soft_vectors, show_default=True,
                     help="Input vectors the query's MiniLM embedding becomes (0: none)."),
        click.option("--item-content", "prompt_item_content", type=click.Choice(CONTENT), default=p.item_content, show_default=True,
                     help="What each history item adds to the prompt beside its SID."),
        click.option("--hidden-size", "tiny_hidden_size", type=click.IntRange(min=32), default=t.hidden_size, show_default=True,
                     help="Width of the tiny decoder."),
        click.option("--layers", "tiny_layers", type=click.IntRange(min=1), default=t.layers, show_default=True,
                     help="Transformer blocks of the tiny decoder."),
        click.option("--heads", "tiny_heads", type=click.IntRange(min=1), default=t.heads, show_default=True,
                     help=f"Attention heads of the tiny decoder ({t.head_dim} wide each; a multiple of its {t.kv_heads} key/value heads)."),
        click.option("--intermediate-size", "tiny_intermediate_size", type=click.IntRange(min=1), default=t.intermediate_size,
                     show_default=True, help="MLP width of the tiny decoder."),
    ]


def _nonnegative_numbers(ctx, param, value: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not all(0 <= x < float("inf") for x in numbers):
        raise click.BadParameter(f"{value!r}: each value must be a finite number >= 0")
    return numbers


def _checkpoint_folder(ctx, param, value: Path | None) -> Path | None:
    if value is not None and not (value / "config.json").is_file():
        raise click.BadParameter(f"{value} has no config.json (a transformers checkpoint folder)")
    return value


base_model_option = click.option(
    "--base-model", type=click.Path(path_type=Path), callback=_checkpoint_folder,
    help="Local Qwen3 checkpoint the decoder starts from (e.g. Qwen3-1.7B; pair it with --bf16 on a GPU); default: a tiny Qwen3.")


def train_options(epochs_flag: str = "--decoder-epochs"):
    """Adds the options to a click command and hands them to it as one ``train_opts`` dict."""

    def decorate(f):
        @functools.wraps(f)
        def command(*args, **kwargs):
            opts = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith(("train_", "prompt_", "tiny_"))}
            return f(*args, train_opts=opts, **kwargs)

        for option in reversed(_options(epochs_flag)):
            command = option(command)
        return command

    return decorate


def train_config(opts: dict, seed: int, base_model: bool = False) -> TrainConfig:
    """The TrainConfig of a command's ``train_opts``."""
    train = {k[6:]: v for k, v in opts.items() if k.startswith("train_")}
    train["lr"] = train["lr"] or (2e-5 if base_model else _DEFAULT.lr)
    try:
        prompt = dataclasses.replace(_DEFAULT.prompt, **{k[7:]: v for k, v in opts.items() if k.startswith("prompt_")})
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    tiny = dataclasses.replace(_DEFAULT.tiny, **{k[5:]: v for k, v in opts.items() if k.startswith("tiny_")})
    return TrainConfig(**train, seed=seed, prompt=prompt, tiny=tiny)
