"""SID quality report: collisions, lengths, per-layer code usage; JSON, a printed table, PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sidcore.sid import SIDTable


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of code usage (0 = uniform, -> 1 = one code takes everything)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * total))


def entropy_bits(counts: np.ndarray) -> float:
    p = np.asarray(counts, dtype=np.float64)
    p = p[p > 0] / p.sum() if p.sum() else p[:0]
    return float(-(p * np.log2(p)).sum())


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


def quality_report(table: SIDTable, head: np.ndarray, reconstruction_mse: float) -> dict:
    sizes = table.group_sizes
    lengths = table.lengths
    q = np.percentile(sizes, [80, 90, 99, 99.9]) if len(sizes) else [0, 0, 0, 0]
    layers = []
    for layer, m in enumerate(table.sizes):
        reach = lengths > layer
        counts = np.bincount(table.codes[reach, layer], minlength=m)
        used = int((counts > 0).sum())
        layers.append(
            {"size": int(m), "used": used, "dead": int(m - used), "entropy": entropy_bits(counts), "gini": gini(counts), "items": int(reach.sum())}
        )
    shared = sizes[table.group_of] > 1
    return {
        "num_items": int(len(lengths)),
        "num_head": int(head.sum()),
        "num_tail": int((~head).sum()),
        "num_sids": int(table.num_sids),
        "mean_sid_length": {"overall": float(lengths.mean()), "head": _mean(lengths[head]), "tail": _mean(lengths[~head])},
        "sid_length_counts": {
            "head": {str(k): int((lengths[head] == k).sum()) for k in range(1, len(table.sizes) + 1)},
            "tail": {str(k): int((lengths[~head] == k).sum()) for k in range(1, len(table.sizes) + 1)},
        },
        "items_per_sid": {
            "p80": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "p999": float(q[3]),
            "mean": float(sizes.mean()), "max": int(sizes.max()),
        },
        "collision_rate": float(shared.mean()),
        "layers": layers,
        "reconstruction_mse": float(reconstruction_mse),
    }


def print_report(report: dict, title: str = "SID quality") -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=title, show_header=False)
    msl = report["mean_sid_length"]
    ips = report["items_per_sid"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [
        ("items (head / tail)", f"{report['num_items']} ({report['num_head']} / {report['num_tail']})"),
        ("SIDs", str(report["num_sids"])),
        ("mean SID length overall / head / tail", f"{fmt(msl['overall'])} / {fmt(msl['head'])} / {fmt(msl['tail'])}"),
        ("items per SID p80 / p90 / p99 / p99.9", f"{ips['p80']:.1f} / {ips['p90']:.1f} / {ips['p99']:.1f} / {ips['p999']:.1f}"),
        ("items per SID mean / max", f"{ips['mean']:.3f} / {ips['max']}"),
        ("collision rate", f"{report['collision_rate']:.4f}"),
        ("reconstruction MSE", f"{report['reconstruction_mse']:.5f}"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    lt = Table(title="layers")
    for col in ("layer", "size", "used", "dead", "entropy (bits)", "gini", "items reaching"):
        lt.add_column(col, justify="right")
    for i, layer in enumerate(report["layers"], 1):
        lt.add_row(str(i), str(layer["size"]), str(layer["used"]), str(layer["dead"]), f"{layer['entropy']:.2f}", f"{layer['gini']:.3f}", str(layer["items"]))
    console.print(lt)


def plot_report(table: SIDTable, head: np.ndarray, out: Path) -> list[Path]:
    """items_per_sid.png, sid_length.png, layer_tokens.png; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    sizes = table.group_sizes
    fig, ax = plt.subplots(figsize=(6, 4))
    values, counts = np.unique(sizes, return_counts=True)
    ax.loglog(values, counts, "o-", ms=3)
    ax.set(xlabel="items per SID", ylabel="number of SIDs", title="Items per SID")
    ax.grid(True, which="both", alpha=0.3)
    paths.append(out / "items_per_sid.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    L = len(table.sizes)
    ks = np.arange(1, L + 1)
    for offset, (name, mask) in zip((-0.2, 0.2), (("head", head), ("tail", ~head))):
        n = max(int(mask.sum()), 1)
        share = [(table.lengths[mask] == k).sum() / n for k in ks]
        ax.bar(ks + offset, share, width=0.4, label=f"{name} ({int(mask.sum())})")
    ax.set(xlabel="SID length", ylabel="share of items", title="SID length by head / tail", xticks=ks)
    ax.legend()
    paths.append(out / "sid_length.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, L, figsize=(4 * L, 3.5), squeeze=False)
    for layer, ax in enumerate(axes[0]):
        reach = table.lengths > layer
        for name, mask in (("head", head), ("tail", ~head)):
            counts = np.sort(np.bincount(table.codes[reach & mask, layer], minlength=table.sizes[layer]))[::-1]
            ax.semilogy(np.arange(1, len(counts) + 1), np.maximum(counts, 0.8), label=name)
        ax.set(title=f"layer {layer + 1} (size {table.sizes[layer]})", xlabel="code rank", ylabel="items")
        ax.legend()
    paths.append(out / "layer_tokens.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
