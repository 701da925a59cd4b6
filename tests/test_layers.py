"""The floor plan holds: import-linter's layers contract (pyproject.toml) passes, and catches a break."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sa2crq", "indexer", "service", "sidcore", "model_store")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename='pyproject.toml'))"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_the_layers_contract_holds():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_the_contract_catches_the_service_importing_the_indexer(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    runtime = tmp_path / "service" / "runtime.py"
    runtime.write_text("from indexer.coldstart import add_items  # the wings must not meet\n" + runtime.read_text())
    done = _lint(tmp_path)
    assert done.returncode != 0
    assert "service.runtime -> indexer.coldstart" in done.stdout, done.stdout
