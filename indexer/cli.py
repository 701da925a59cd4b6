"""``sa2crq`` command line: a thin shell over the indexer, store and service modules.

Bad input exits with status 2 and a one-line message naming the problem; nothing is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from indexer.data.catalog import DataError
from model_store import Store, StoreError


def _sizes(_ctx, _param, value: str | None):
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 256,512,1024, got {value!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise click.BadParameter("codebook sizes must be positive integers")
    return sizes


def _budget(_ctx, _param, value: str | None):
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected a number of nats (or one per checked layer), got {value!r}") from None
    return parts[0] if len(parts) == 1 else parts


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """SA²CRQ generative retrieval: build variable-length semantic IDs, publish, serve."""


@cli.group()
def data() -> None:
    """Data sets: generate synthetic catalogs."""


@data.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--items", "num_items", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--users", type=click.IntRange(min=0), default=0, show_default=True, help="Also write sequences.jsonl.")
@click.option("--dim", type=click.IntRange(min=0), default=0, show_default=True, help="Also write vectors.npy of this dimension.")
@click.option("--seed", type=int, default=0, show_default=True)
def data_synth(out: Path, num_items: int, users: int, dim: int, seed: int) -> None:
    """Write a Zipf long-tail catalog (items.jsonl, optional sequences.jsonl, vectors.npy)."""
    from indexer.data.synthetic import SyntheticConfig, generate, write

    paths = write(generate(SyntheticConfig(num_items=num_items, dim=dim, seed=seed)), out, num_users=users, seed=seed)
    for name, p in paths.items():
        click.echo(f"{name}: {p}")


@cli.group()
def index() -> None:
    """Build and inspect index versions."""


@index.command("build")
@click.option("--items", type=click.Path(path_type=Path), required=True, help="Items JSONL (item_id, title/text).")
@click.option("--interactions", type=click.Path(path_type=Path), help="sequences.jsonl or BEIR qrels .tsv for popularity.")
@click.option("--holdout-last", type=click.IntRange(min=0), default=0, show_default=True, help="Ignore the last N items of each sequence when counting popularity.")
@click.option("--method", type=click.Choice(["rq-kmeans", "rq-vae", "acrq", "sarq", "sa2crq"]), default="sa2crq", show_default=True)
@click.option("--codebook-sizes", callback=_sizes, default="256,512,1024", show_default=True, help="Per-layer codebook sizes.")
@click.option("--budget", callback=_budget, help="SARQ budget in nats (one, or one per checked layer); default ln(#head/8).")
@click.option("--min-length", type=click.IntRange(min=1), default=2, show_default=True, help="Shortest SARQ SID.")
@click.option("--direction", type=click.Choice(["dense-longer", "dense-shorter"]), default="dense-longer", show_default=True)
@click.option("--split-by", type=click.Choice(["interactions", "items"]), default="interactions", show_default=True)
@click.option("--head-share", type=click.FloatRange(0, 1, min_open=True), default=0.8, show_default=True)
@click.option("--extension", type=click.FloatRange(0, 4), default=0.25, show_default=True, help="ACRQ new codewords per layer, share of head size.")
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True, help="RQ-VAE epochs (per ACRQ stage).")
@click.option("--dedup", is_flag=True, help="TIGER-style collision suffix (fixed-length methods).")
@click.option("--vectors", type=click.Path(path_type=Path), help="Precomputed item vectors (.npy, rows in items order).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--store", type=click.Path(path_type=Path), required=True, help="Artifact store directory.")
@click.option("--activate", is_flag=True, help="Make the new version the active index of the store.")
@click.option("--quiet", is_flag=True, help="No progress bars or table.")
def index_build(items, interactions, holdout_last, method, codebook_sizes, budget, min_length, direction, split_by,
                head_share, extension, epochs, dedup, vectors, seed, store, activate, quiet) -> None:
    """Build a new index version and print its id."""
    from indexer.build import BuildConfig, build_index
    from indexer.data.catalog import count_popularity, load_items, load_vectors
    from indexer.quantizers import QuantizerConfig
    from indexer.report import print_report
    from indexer.sarq import SARQConfig
    from indexer.split import SplitConfig

    cfg = BuildConfig(
        method=method,
        quantizer=QuantizerConfig(sizes=codebook_sizes, seed=seed, epochs=epochs, extension=extension),
        sarq=SARQConfig(budget=budget, min_length=min_length, direction=direction),
        split=SplitConfig(by=split_by, head_share=head_share),
        dedup=dedup,
    )
    catalog = load_items(items)
    if interactions:
        catalog = catalog.with_popularity(count_popularity(catalog, interactions, holdout_last))
    if vectors:
        catalog = catalog.with_vectors(load_vectors(vectors, len(catalog)))
    st = Store(store)
    version, report = build_index(catalog, cfg, st, progress=not quiet)
    if activate:
        st.activate("index", version)
    if not quiet:
        print_report(report, title=f"{method} {version}")
    click.echo(version)


@index.command("report")
@click.option("--store", type=click.Path(path_type=Path), required=True)
@click.option("--version", help="Default: the active version, else the newest.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def index_report(store: Path, version: str | None, as_json: bool) -> None:
    """Print the quality report of an index version."""
    from indexer.report import print_report

    st = Store(store)
    v = st.open(st.resolve("index", version), kind="index")
    report = v.json("report.json")
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(report, title=f"{v.manifest.config['method']} {v.id}")


@cli.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo"), show_default=True)
@click.option("--items", "num_items", type=click.IntRange(min=1000), default=20_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(workdir: Path, num_items: int, seed: int) -> None:
    """Main job on embedded defaults: generate a catalog, build its SA²CRQ index, print the report."""
    from indexer.build import BuildConfig, build_index
    from indexer.data.catalog import count_popularity, load_items
    from indexer.data.synthetic import SyntheticConfig, generate, write
    from indexer.quantizers import QuantizerConfig
    from indexer.report import print_report

    click.echo(f"[1/2] generating a {num_items}-item long-tail catalog in {workdir}/data")
    paths = write(generate(SyntheticConfig(num_items=num_items, seed=seed)), workdir / "data", num_users=num_items // 4, seed=seed)
    catalog = load_items(paths["items"])
    catalog = catalog.with_popularity(count_popularity(catalog, paths["sequences"]))
    click.echo("[2/2] embedding with MiniLM and building the SA²CRQ index")
    st = Store(workdir / "store")
    cfg = BuildConfig(method="sa2crq", quantizer=QuantizerConfig(sizes=(128, 256, 512), seed=seed))
    version, report = build_index(catalog, cfg, st, cache_dir=workdir / "cache")
    st.activate("index", version)
    print_report(report, title=f"sa2crq {version}")
    click.echo(f"index {version} is active in {st.root}; plots: {st.root / version}/*.png")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (DataError, StoreError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
