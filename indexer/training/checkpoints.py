"""Per-epoch checkpoints of a decoder training run, so an interrupted run resumes where it stopped.

A run's folder holds ``run.json`` (everything the run depends on: the training config, the index
version, the data) and ``last.pt`` (model, prompt inputs, optimizer, scheduler, random states,
selection state), rewritten atomically after every epoch. A run started against a folder whose
``run.json`` differs refuses and names the first setting that changed; the folder is removed once
the decoder is sealed in the store.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from sidcore.errors import DataError


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def changed_setting(old: dict, new: dict) -> tuple[str, Any, Any] | None:
    """The first (dotted name, old value, new value) that differs between two run descriptions."""
    a, b = _flatten(old), _flatten(new)
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) != b.get(key):
            return key, a.get(key), b.get(key)
    return None


class Checkpoints:
    """The checkpoint folder of one training run, described by ``run`` (JSON-able)."""

    def __init__(self, directory: Path, run: dict, restart: bool = False):
        self.dir = Path(directory)
        self.run = json.loads(json.dumps(run))
        described = self.dir / "run.json"
        if restart and self.dir.exists():
            shutil.rmtree(self.dir)
        if described.is_file():
            old = json.loads(described.read_text())
            diff = changed_setting(old, self.run)
            if diff is not None:
                key, was, now = diff
                raise DataError(
                    f"{self.dir} holds checkpoints of a run with {key}={was!r}, this run has {key}={now!r}: "
                    "rerun with the same settings to resume it, or pass --restart to start over"
                )
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            described.write_text(json.dumps(self.run, indent=2))

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    def load(self) -> dict | None:
        """The state saved after the last finished epoch, or None for a fresh run."""
        return torch.load(self.last, weights_only=False) if self.last.is_file() else None

    def save(self, state: dict) -> None:
        tmp = self.last.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.last)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
