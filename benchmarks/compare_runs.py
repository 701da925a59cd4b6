"""Compare settings across seeds from `sa2crq eval` outputs: a markdown table and a dot plot.

Each ``--run LABEL=DIR`` is one eval output folder; runs sharing a label are seeds of one setting,
and the table adds their mean. Settings are decided on those means, so the plot shows every seed
beside the mean rather than a mean alone.

    python benchmarks/compare_runs.py --run default=big-s0 --run default=big-s1 \
        --run "span pool 18=pool-s0" --run "span pool 18=pool-s1" --out docs/img/span_pool.png

``--curves`` also plots what chose each decoder's epoch: its validation Recall@10 after every
epoch, one line per run (a colour per setting, a line style per run of it).

``--method auto`` reads each report's only method, so runs of different methods (one
``--methods`` each, side by side) compare as settings:

    python benchmarks/compare_runs.py --method auto --run SA2CRQ=s0 --run RQ-Kmeans=k0 --run RQ-VAE=v0
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from pathlib import Path

import click
import numpy as np


@functools.lru_cache(maxsize=None)
def _methods(folder: Path) -> dict:
    """``folder``'s report's methods, read once however many figures a run gives."""
    return json.loads((folder / "report.json").read_text())["methods"]


def _method(folder: Path, method: str) -> dict:
    """``method``'s entry in ``folder``'s report; ``"auto"``: the report's only method."""
    methods = _methods(folder)
    if method == "auto":
        if len(methods) != 1:
            raise click.BadParameter(f"{folder} holds {len(methods)} methods ({sorted(methods)}): name one", param_hint="--method")
        return next(iter(methods.values()))
    if method not in methods:
        raise click.BadParameter(f"{folder} has no method {method!r} (it has {sorted(methods)})", param_hint="--run")
    return methods[method]


def recalls(folder: Path, method: str, cuts: list[str]) -> dict[str, float]:
    """Overall Recall@k of ``method`` in ``folder``'s report, per cut-off in ``cuts``."""
    recall = _method(folder, method)["recall"]
    return {k: recall[k]["overall"] for k in cuts}


def curve(folder: Path, method: str) -> list[tuple[int, float]]:
    """(epoch, validation Recall@10) of ``method``'s decoder in ``folder``'s report."""
    summary = _method(folder, method).get("decoder_summary") or {}
    return [(c["epoch"], c["val_recall@10"]) for c in summary.get("curve", []) if c.get("val_recall@10") is not None]


def _run(ctx, param, values: tuple[str, ...]) -> list[tuple[str, Path]]:
    runs = []
    for value in values:
        label, sep, folder = value.partition("=")
        if not sep or not label or not (Path(folder) / "report.json").is_file():
            raise click.BadParameter(f"{value!r}: expected LABEL=DIR with DIR/report.json", param_hint="--run")
        runs.append((label, Path(folder)))
    return runs


@click.command()
@click.option("--run", "runs", multiple=True, required=True, callback=_run, help="LABEL=DIR of one eval output; repeat per seed.")
@click.option("--method", default="sa2crq", show_default=True, help="The method of each report to compare; auto: each report's only method.")
@click.option("--k", "ks", default="10,100", show_default=True, help="Recall cut-offs, comma-separated.")
@click.option("--out", type=click.Path(path_type=Path), help="Where to save the plot (PNG); no plot without it.")
@click.option("--curves", type=click.Path(path_type=Path), help="Where to save the validation curves (PNG).")
def main(runs: list[tuple[str, Path]], method: str, ks: str, out: Path | None, curves: Path | None) -> None:
    cuts = [k.strip() for k in ks.split(",") if k.strip()]
    by_label: dict[str, list[dict[str, float]]] = defaultdict(list)
    for label, folder in runs:
        by_label[label].append(recalls(folder, method, cuts))
    click.echo("| setting | " + " | ".join(f"Recall@{k} per run (mean)" for k in cuts) + " |")
    click.echo("|---|" + "---|" * len(cuts))
    for label, rows in by_label.items():
        cells = [", ".join(f"{r[k]:.3f}" for r in rows) + f" ({np.mean([r[k] for r in rows]):.3f})" for k in cuts]
        click.echo(f"| {label} | " + " | ".join(cells) + " |")
    if out is None and curves is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if curves is not None:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        colours = {label: f"C{i}" for i, label in enumerate(by_label)}
        seen: dict[str, int] = defaultdict(int)
        for label, folder in runs:
            points = curve(folder, method)
            style = ("-", "--", ":", "-.")[seen[label] % 4]
            seen[label] += 1
            ax.plot(*zip(*points), style, color=colours[label], marker="o", ms=3, label=f"{label} ({folder.name})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation Recall@10")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        curves.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(curves, dpi=110)
        click.echo(f"curves: {curves}")
    if out is None:
        return
    fig, axes = plt.subplots(1, len(cuts), figsize=(4 * len(cuts), 3.2), squeeze=False)
    for ax, k in zip(axes[0], cuts):
        for x, (label, rows) in enumerate(by_label.items()):
            values = [r[k] for r in rows]
            ax.scatter([x] * len(values), values, color="grey", s=18, zorder=2)
            ax.hlines(np.mean(values), x - 0.25, x + 0.25, color="C0", lw=2, zorder=3)
        ax.set_xticks(range(len(by_label)), list(by_label), rotation=15)
        ax.set_title(f"{'' if method == 'auto' else method + ' '}Recall@{k} (dots: seeds, bar: mean)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    click.echo(f"plot: {out}")


if __name__ == "__main__":
    main()
