"""benchmarks/compare_runs.py: seeds of one setting are averaged; bad --run values exit 2."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_runs.py"


def _report(folder: Path, r10: float, r100: float) -> Path:
    folder.mkdir()
    recall = {"10": {"overall": r10}, "100": {"overall": r100}}
    (folder / "report.json").write_text(json.dumps({"methods": {"sa2crq": {"recall": recall}}}))
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
