"""The request mix shared by the Locust file and the soak runner (no Locust import: it patches the stdlib).

Queries are item titles (whole, or a few of their words, as people type them); histories are the
users' sequences cut to their newest items (item ids as strings, newest last). ``k`` and the beam
width are drawn per request.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# Request kinds and the catalog data each one needs.
NEEDS = {"query": ("titles",), "words": ("titles",), "history": ("histories",), "both": ("titles", "histories")}
DEFAULT_MIX = "query=35,words=15,history=35,both=15"


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def beam_list(text: str) -> list[int | None]:
    """``default`` stands for no beam_width in the request (the service picks)."""
    return [None if v.strip() == "default" else int(v) for v in text.split(",") if v.strip()]


def parse_mix(text: str) -> dict[str, float]:
    weights = {kind.strip(): float(w) for kind, w in (part.split("=") for part in text.split(",") if part.strip())}
    unknown = set(weights) - set(NEEDS)
    if unknown:
        raise ValueError(f"mix: unknown kinds {sorted(unknown)}; use {sorted(NEEDS)}")
    return weights


class Catalog:
    """What the requests are drawn from: the served catalog's titles and user histories."""

    def __init__(self, data_dir: Path | str, max_history: int = 20):
        data_dir = Path(data_dir)
        items, sequences = data_dir / "items.jsonl", data_dir / "sequences.jsonl"
        if not items.is_file():
            raise FileNotFoundError(f"{items} not found: the data folder must be the served catalog's (items.jsonl, sequences.jsonl)")
        self.titles: list[str] = []
        with open(items, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                text = " ".join(str(row.get("title") or row.get("text") or "").split()[:32])
                if text:
                    self.titles.append(text)
        self.histories: list[list[str]] = []
        if sequences.is_file():
            with open(sequences, encoding="utf-8") as f:
                for line in f:
                    ids = [str(i) for i in json.loads(line)["item_ids"]]
                    if ids:
                        self.histories.append(ids[-max_history:])
        if not self.titles and not self.histories:
            raise ValueError(f"{data_dir}: no titles and no histories to draw requests from")


class RequestMix:
    """A seeded stream of (kind, request body) for ``POST /retrieve``."""

    def __init__(self, catalog: Catalog, k_values: list[int], beam_widths: list[int | None], mix: dict[str, float], seed: int = 0):
        self.catalog, self.k_values, self.beam_widths = catalog, k_values, beam_widths
        self.rng = random.Random(seed)
        # A kind needing data the catalog lacks (e.g. no sequences.jsonl) is dropped, not sent empty.
        usable = {k: w for k, w in mix.items() if w > 0 and all(getattr(catalog, need) for need in NEEDS[k])}
        if not usable:
            raise ValueError(f"no request kind of the mix {mix} can be drawn from this catalog")
        self.kinds, self.weights = list(usable), list(usable.values())

    def next(self) -> tuple[str, dict]:
        rng, cat = self.rng, self.catalog
        kind = rng.choices(self.kinds, self.weights)[0]
        body: dict = {"k": rng.choice(self.k_values)}
        beam = rng.choice(self.beam_widths)
        if beam is not None:
            body["beam_width"] = beam
        if kind in ("query", "both"):
            body["query"] = rng.choice(cat.titles)
        elif kind == "words":
            words = rng.choice(cat.titles).split()
            n = min(len(words), rng.randint(2, 4))
            start = rng.randint(0, len(words) - n)
            body["query"] = " ".join(words[start:start + n])
        if kind in ("history", "both"):
            seq = rng.choice(cat.histories)
            body["history"] = seq[-rng.randint(1, len(seq)):]
        return kind, body


def check_answer(body: dict, status: int, answer: dict | None) -> str | None:
    """Why an answer breaks the API contract, or None when it is fine."""
    if status != 200:
        return f"status {status}"
    try:
        items = answer["items"]
        if len(items) > body["k"]:
            return f"{len(items)} items for k={body['k']}"
        if not all(i["item_id"] and i["sid"] for i in items):
            return "an item without id or SID"
        if not (answer["index_version"] and answer["model_version"]):
            return "no index or model version"
    except (KeyError, TypeError) as e:
        return f"malformed answer: {e!r}"
    return None
