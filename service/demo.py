"""The demo's last step: start the service, send sample /retrieve calls, print the answers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from indexer.data.catalog import load_items, load_sequences
from service.server import BackgroundServer
from service.settings import Settings


def _show(console: Console, title: str, body: dict, answer: dict, titles: dict[str, str], target: str | None = None) -> None:
    table = Table(title=f"{title}   ({answer['took_ms']:.1f} ms, index {answer['index_version']})", title_justify="left")
    for column in ("rank", "item", "title", "SID", "score"):
        table.add_column(column)
    for rank, item in enumerate(answer["items"], 1):
        mark = " ← held-out next item" if item["item_id"] == target else ""
        table.add_row(str(rank), item["item_id"], titles.get(item["item_id"], "")[:48] + mark, item["sid"], f"{item['score']:.3f}")
    console.print(f"POST /retrieve {json.dumps(body)}")
    console.print(table)


def run_samples(store: Path, data_dir: Path, redis_url: str | None, port: int = 0, keep_serving: bool = False) -> None:
    console = Console()
    catalog = load_items(data_dir / "items.jsonl")
    titles = dict(zip(catalog.item_ids, catalog.texts))
    sequences = [s for s in load_sequences(data_dir / "sequences.jsonl") if len(s) >= 4]
    settings = Settings(_env_file=None, store=store, redis_url=redis_url, port=port)
    with BackgroundServer(settings) as server:
        console.print(f"service up at {server.url} (docs: {server.url}/docs)")
        with httpx.Client(base_url=server.url, timeout=60) as http:
            history, target = sequences[0][:-1], sequences[0][-1]
            words = " ".join(titles[target].split()[:3])
            samples = [
                ("by text query", {"query": words, "k": 5}, None),
                ("by history (newest last)", {"history": history, "k": 5}, target),
                ("by history and query", {"history": history, "query": words, "k": 5}, target),
            ]
            for title, body, tgt in samples:
                r = http.post("/retrieve", json=body)
                r.raise_for_status()
                _show(console, title, body, r.json(), titles, tgt)
            held_out = sequences[:200]
            hits = 0
            for seq in held_out:
                items = http.post("/retrieve", json={"history": seq[:-1], "k": 10}).json()["items"]
                hits += seq[-1] in {i["item_id"] for i in items}
            console.print(f"Recall@10 on {len(held_out)} held-out next items: {hits / max(len(held_out), 1):.3f}")
            console.print(f"/stats: {http.get('/stats').json()}")
        console.print(f"try: curl -s -X POST {server.url}/retrieve -H 'content-type: application/json' "
                      f"-d '{json.dumps({'query': words, 'k': 5})}'")
        if keep_serving:
            console.print("serving until Ctrl-C")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass
