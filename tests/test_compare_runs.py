"""benchmarks/compare_runs.py: seeds of one setting are averaged; validation curves plotted; bad
--run values exit 2."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_runs.py"


def _report(folder: Path, r10: float, r100: float, curve: list | None = None, methods: tuple[str, ...] = ("sa2crq",)) -> Path:
    folder.mkdir()
    recall = {"10": {"overall": r10}, "100": {"overall": r100}}
    summary = {"curve": curve} if curve else None
    (folder / "report.json").write_text(json.dumps({"methods": {m: {"recall": recall, "decoder_summary": summary} for m in methods}}))
    return folder


def test_seeds_of_a_setting_are_averaged(tmp_path):
    a, b, c = _report(tmp_path / "a", 0.70, 0.88), _report(tmp_path / "b", 0.74, 0.90), _report(tmp_path / "c", 0.75, 0.91)
    out = subprocess.run([sys.executable, SCRIPT, "--run", f"base={a}", "--run", f"base={b}", "--run", f"pool={c}",
                          "--out", tmp_path / "p.png"], capture_output=True, text=True, check=True).stdout
    assert "| base | 0.700, 0.740 (0.720) | 0.880, 0.900 (0.890) |" in out
    assert "| pool | 0.750 (0.750) | 0.910 (0.910) |" in out
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_bad_runs_exit_2_naming_the_option(tmp_path):
    bad = subprocess.run([sys.executable, SCRIPT, "--run", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "--run" in bad.stderr
    folder = _report(tmp_path / "a", 0.7, 0.9)
    bad = subprocess.run([sys.executable, SCRIPT, "--run", f"x={folder}", "--method", "rq-vae"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no method 'rq-vae'" in bad.stderr


def test_validation_curves_come_from_each_decoders_summary(tmp_path):
    spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    points = [{"epoch": 1, "val_recall@10": 0.05}, {"epoch": 2, "val_recall@10": 0.08}, {"epoch": 3, "val_recall@10": None}]
    a = _report(tmp_path / "a", 0.1, 0.3, points)
    assert module.curve(a, "sa2crq") == [(1, 0.05), (2, 0.08)]
    b = _report(tmp_path / "b", 0.1, 0.3, [{"epoch": 1, "val_recall@10": 0.06}])
    subprocess.run([sys.executable, SCRIPT, "--run", f"x={a}", "--run", f"y={b}", "--curves", tmp_path / "c.png"], check=True, capture_output=True)
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_auto_reads_each_reports_only_method(tmp_path):
    a = _report(tmp_path / "a", 0.12, 0.36)
    b = _report(tmp_path / "b", 0.10, 0.37, methods=("rq-kmeans",))
    out = subprocess.run([sys.executable, SCRIPT, "--method", "auto", "--run", f"SA2CRQ={a}", "--run", f"RQ-Kmeans={b}"],
                         capture_output=True, text=True, check=True).stdout
    assert "| SA2CRQ | 0.120 (0.120) | 0.360 (0.360) |" in out and "| RQ-Kmeans | 0.100 (0.100) | 0.370 (0.370) |" in out
    both = _report(tmp_path / "c", 0.1, 0.3, methods=("sa2crq", "rq-vae"))
    bad = subprocess.run([sys.executable, SCRIPT, "--method", "auto", "--run", f"x={both}"], capture_output=True, text=True)
    assert bad.returncode == 2 and "holds 2 methods" in bad.stderr and "--method" in bad.stderr
