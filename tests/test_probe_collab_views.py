"""benchmarks/probe_collab_views.py: the screen's score counts code-to-code steps, and a bad
--reaches exits 2 naming it."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "probe_collab_views.py"


def _module():
    spec = importlib.util.spec_from_file_location("probe_collab_views", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_next_code_is_read_from_the_steps_after_the_last_items_code():
    probe = _module()
    code = np.array([0, 1, 2, 2])  # items 2 and 3 share code 2
    train = [np.array(s) for s in ([0, 1], [0, 1], [0, 2], [1, 2], [2, 0])]
    # steps: code 0 -> 1 twice, 0 -> 2 once, 1 -> 2, 2 -> 0; the last items' codes are 1, 1, 2, 2, 0
    assert probe.next_code_recall(code, train, np.array([3, 2, 0, 0, 1]), k=3, top=1) == 1.0
    assert probe.next_code_recall(code, train, np.array([3, 0, 0, 1, 1]), k=3, top=1) == 0.6


def test_bad_reaches_exit_2_naming_the_option():
    assert _module().reaches("1, 2,3") == [1, 2, 3]
    for bad in ("0", "2,x"):
        out = subprocess.run([sys.executable, SCRIPT, "--data", "nowhere", "--reaches", bad], capture_output=True, text=True)
        assert out.returncode == 2 and "--reaches" in out.stderr
