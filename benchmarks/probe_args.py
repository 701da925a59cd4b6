"""The arguments every validation probe takes: a trained store, its data, and which validation cases."""

from __future__ import annotations

import argparse
from pathlib import Path


def probe_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with ``--store``, ``--data``, ``--cases`` and ``--seed`` (the decoder's, which
    drew its validation sample); a probe adds its own arguments."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="The decoder's training seed: its validation sample.")
    return ap
