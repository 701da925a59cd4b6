"""``sa2crq eval``: every method and baseline on one test split, into report.json / report.md / plots."""

from __future__ import annotations

from pathlib import Path

import click

from indexer.cli import collab_views_option, sarq_shape_options
from indexer.training.options import base_model_option, train_config, train_options


def _csv(kind):
    def parse(_ctx, param, value: str | None):
        if value is None:
            return None
        parts = [v.strip() for v in value.split(",") if v.strip()]
        try:
            return tuple(kind(v) for v in parts)
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {kind.__name__}s, got {value!r}") from None

    return parse


@click.command("eval")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="items.jsonl + sequences.jsonl (histories), or a BEIR corpus.jsonl + queries.jsonl + qrels/.")
@click.option("--methods", callback=_csv(str), default="rq-kmeans,rq-vae,acrq,sarq,sa2crq", show_default=True)
@click.option("--budgets", callback=_csv(float), help="SARQ budgets in nats: sarq and sa2crq run once per budget. Default: automatic.")
@sarq_shape_options
@click.option("--baselines", callback=_csv(str), default="popularity,bm25,dense,rules,sasrec", show_default=True,
              help="Baselines to run ('' for none); those that do not fit the cases are reported as skipped.")
@click.option("--test", type=click.Path(path_type=Path),
              help='History cases JSONL {"history": [ids], "target": id}, or with --test-qrels a BEIR queries JSONL.')
@click.option("--test-qrels", type=click.Path(path_type=Path), help="qrels TSV scoring the --test queries.")
@click.option("--k", "ks", callback=_csv(int), default="1,5,10,20,100", show_default=True, help="Cut-offs K.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder; a re-run reuses the runs finished there.")
@click.option("--vectors", type=click.Path(path_type=Path), help="Item vectors (.npy, rows in items order) instead of MiniLM.")
@click.option("--codebook-sizes", callback=_csv(int), help="Per-layer codebook sizes for every method. Default: from the catalog (docs/indexing.md).")
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True, help="Quantizer epochs (per ACRQ stage).")
@click.option("--anchor-share", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="ACRQ's first stage fits on at least this share of the catalog and the last codebook's size: the head, topped up with a tail sample.")
@click.option("--collab-weight", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Weight of the collaborative part of item vectors in every index (data with histories; 0: text alone).")
@collab_views_option
@base_model_option
@train_options()
@click.option("--beam", type=click.IntRange(min=1), default=20, show_default=True, help="Default beam width (as the service's).")
@click.option("--length-penalty", type=click.FloatRange(min=0),
              help="SID scores divided by (length + 1) ** this on the test cases, as the service's SA2CRQ_LENGTH_PENALTY "
                   "(0: plain sums). Default: each decoder's own, chosen on its validation cases (--length-penalties).")
@click.option("--item-weight", type=click.FloatRange(min=0),
              help="History cases rank their decoded SIDs' items by SID score + this x the decoder's item-head logit, as the "
                   "service's SA2CRQ_ITEM_WEIGHT (0: SID scores alone). Default: each decoder's own, chosen on its validation "
                   "cases (--item-weights).")
@click.option("--item-prior", type=click.FloatRange(min=0),
              help="The item head's logits lowered by this x each item's log share of the training interactions, as the "
                   "service's SA2CRQ_ITEM_PRIOR (0: none). Default: each decoder's own, chosen on its validation cases (--item-priors).")
@click.option("--beams-per-item", type=click.IntRange(min=1), default=4, show_default=True,  # sidcore.retriever.FUSED_BEAMS_PER_ITEM (tested)
              help="Beams per requested item for a case the item head re-ranks, as the service's SA2CRQ_FUSED_BEAMS_PER_ITEM.")
@click.option("--head-proposals", type=click.IntRange(min=0), default=1, show_default=True,  # sidcore.retriever.HEAD_PROPOSALS_PER_ITEM (tested)
              help="Items the item head proposes per requested item beside the beams, as the service's SA2CRQ_HEAD_PROPOSALS_PER_ITEM.")
@click.option("--max-cases", type=click.IntRange(min=1), help="Score a seeded sample of this many test cases.")
@click.option("--hallucination-cases", type=click.IntRange(min=0), default=500, show_default=True, help="Cases decoded with the constraint off.")
@click.option("--sasrec-epochs", type=click.IntRange(min=1), default=100, show_default=True,
              help="SASRec epochs at most; it stops when validation Recall@10 has not improved for --sasrec-patience epochs.")
@click.option("--sasrec-patience", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--exclude-history/--keep-history", default=True, show_default=True,
              help="Leave each case's own history items out of every ranking (as the service does by default).")
@click.option("--head-share", type=click.FloatRange(0, 1, min_open=True), default=0.8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the quantizers, decoders, SASRec and the case sample.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Embedding cache (default: $SA2CRQ_CACHE_DIR or ~/.cache/sa2crq).")
@click.option("--quiet", is_flag=True, help="No progress bars or table.")
def eval_cmd(data_dir, methods, budgets, max_group, min_length, baselines, test, test_qrels, ks, out, vectors, codebook_sizes, epochs, anchor_share, collab_weight, collab_views, base_model, train_opts,
             beam, length_penalty, item_weight, item_prior, beams_per_item, head_proposals, max_cases, hallucination_cases, sasrec_epochs, sasrec_patience, exclude_history, head_share, seed, cache_dir, quiet) -> None:
    """Build each method's index and decoder under one budget, decode the test cases through the
    service's retrieval pipeline, score them next to the baselines, and write OUT/report.json,
    OUT/report.md and plots."""
    import dataclasses

    from indexer.evaluation.baselines import SASRecConfig
    from indexer.evaluation.cases import load_eval_data
    from indexer.evaluation.config import EvalConfig
    from indexer.evaluation.report import headline_k, headline_rows, timing_table
    from indexer.evaluation.runner import run_all
    from indexer.quantizers import QuantizerConfig
    from indexer.sarq import SARQConfig
    from indexer.split import SplitConfig

    cfg = EvalConfig(
        methods=methods,
        budgets=budgets or (),
        sarq=SARQConfig(max_group=max_group, min_length=min_length),
        baselines=baselines or (),
        ks=ks,
        quantizer=QuantizerConfig(sizes=codebook_sizes, epochs=epochs, anchor_share=anchor_share, seed=seed),
        split=SplitConfig(head_share=head_share),
        collab_weight=collab_weight,
        collab_views=collab_views,
        train=train_config(train_opts, seed, base_model is not None),
        base_model=base_model,
        sasrec=dataclasses.replace(SASRecConfig(), epochs=sasrec_epochs, patience=sasrec_patience),
        exclude_history=exclude_history,
        beam_width=beam,
        length_penalty=length_penalty,
        item_weight=item_weight,
        item_prior=item_prior,
        fused_beams_per_item=beams_per_item,
        head_proposals_per_item=head_proposals,
        max_cases=max_cases,
        hallucination_cases=hallucination_cases,
        seed=seed,
    )
    data = load_eval_data(data_dir, test, test_qrels, vectors, cfg.split, cfg.train.prompt.history_items)
    log = (lambda _msg: None) if quiet else (lambda msg: click.echo(msg, err=True))
    report = run_all(data, cfg, out, cache_dir=cache_dir, progress=not quiet, log=log)
    if not quiet:
        from rich.console import Console
        from rich.table import Table

        k = headline_k(cfg.ks)
        t = Table(title=f"{report['data']['cases']} cases, overall / head / tail")
        for col in ("run", f"Recall@{k}", f"NDCG@{k}", f"MRR@{k}", "halluc.", "Ret-Per", f"cov@{k}", "SID length"):
            t.add_column(col)
        for row in headline_rows(report):
            t.add_row(*row)
        Console().print(t)
        Console().print(timing_table(report))
    click.echo(out / "report.json")
