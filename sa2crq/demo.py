"""The main job on embedded defaults: a synthetic long-tail catalog → SA²CRQ index (with the items'
attributes and titles) → tiny decoder → the service on an embedded Redis → sample /v1/retrieve
calls through ``sa2crq.client``, printed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from click import echo
from rich.console import Console
from rich.table import Table

from indexer.build import BuildConfig, build_index
from indexer.cli import redis_index
from indexer.coldstart import activate_release
from indexer.data.catalog import count_popularity, load_items, load_sequences
from indexer.data.synthetic import ATTRIBUTES, SyntheticConfig, generate, write
from indexer.quantizers import QuantizerConfig
from indexer.report import print_report
from indexer.training.config import TrainConfig
from indexer.training.trainer import train_decoder
from model_store import Store
from sa2crq.client import Client
from sa2crq.wiring import background_server
from service.settings import Settings


def run_demo(workdir: Path, num_items: int, epochs: int, train: TrainConfig, seed: int, redis_url: str | None,
             serve: bool, keep_serving: bool, port: int) -> None:
    """See ``sa2crq demo --help``."""
    total = 4 + serve
    echo(f"[1/{total}] generating a {num_items}-item long-tail catalog in {workdir}/data")
    paths = write(generate(SyntheticConfig(num_items=num_items, seed=seed)), workdir / "data", num_users=num_items // 4, seed=seed)
    catalog = load_items(paths["items"], ATTRIBUTES, ("title",))
    catalog = catalog.with_popularity(count_popularity(catalog, paths["sequences"], holdout_last=2))
    echo(f"[2/{total}] embedding with MiniLM and building the SA²CRQ index")
    st = Store(workdir / "store")
    # Codebook sizes from the catalog; item vectors = MiniLM + collaborative vectors of the training histories.
    cfg = BuildConfig(method="sa2crq", quantizer=QuantizerConfig(epochs=epochs, seed=seed), collab_weight=1.0)
    training = [s[:-2] for s in load_sequences(paths["sequences"])]
    version, report = build_index(catalog, cfg, st, cache_dir=workdir / "cache", sequences=training)
    st.activate("index", version)
    print_report(report, title=f"sa2crq {version}")
    echo(f"[3/{total}] training the tiny Qwen3 decoder (up to {train.epochs} epochs, kept at the best validation Recall@10; "
         "the last item of each history is held out)")
    decoder_version, summary = train_decoder(st, workdir / "data", train, index_version=version, cache_dir=workdir / "cache", log=echo)
    st.activate("decoder", decoder_version)
    echo(f"decoder {decoder_version}: {json.dumps(summary)}")
    if redis_url:
        echo(f"[4/{total}] publishing index {version} and decoder {decoder_version} to {redis_url} as the active release")
        with redis_index(redis_url) as idx:
            release = idx.publish_release(st, version, decoder_version, progress=False)
            activate_release(idx, release.name)
    else:
        echo(f"[4/{total}] index {version} and decoder {decoder_version} are active in {st.root}")
    if serve:
        echo(f"[5/{total}] starting the service ({'Redis at ' + redis_url if redis_url else 'embedded Redis'}, torch engine)")
        run_samples(st.root, workdir / "data", redis_url, port, keep_serving)


def _show(console: Console, title: str, body: dict, answer, target: str | None = None) -> None:
    table = Table(title=f"{title}   ({answer.took_ms:.1f} ms, index {answer.index_version})", title_justify="left")
    for column in ("rank", "item", "title", "SID", "score"):
        table.add_column(column)
    for rank, item in enumerate(answer.items, 1):
        mark = " ← held-out next item" if item.item_id == target else ""
        title_text = (item.fields or {}).get("title", "")
        table.add_row(str(rank), item.item_id, title_text[:48] + mark, item.sid, f"{item.score:.3f}")
    console.print(f"POST /v1/retrieve {json.dumps(body)}")
    console.print(table)
    if answer.reason:
        console.print(f"reason: {answer.reason}")


def run_samples(store: Path, data_dir: Path, redis_url: str | None, port: int = 0, keep_serving: bool = False) -> None:
    console = Console()
    catalog = load_items(data_dir / "items.jsonl")
    titles = dict(zip(catalog.item_ids, catalog.texts))
    sequences = [s for s in load_sequences(data_dir / "sequences.jsonl") if len(s) >= 4]
    settings = Settings(_env_file=None, store=store, redis_url=redis_url, port=port)
    with background_server(settings) as server:
        console.print(f"service up at {server.url} (docs: {server.url}/docs)")
        with Client(server.url, timeout=60) as client:
            history, target = sequences[0][:-1], sequences[0][-1]
            words = " ".join(titles[target].split()[:3])
            in_stock_under_50 = {"must": [{"field": "available", "value": True}, {"field": "price", "range": {"lt": 50}}]}
            samples = [
                ("by text query", {"query": words, "k": 5}, None),
                ("by history (newest last; its items are left out)", {"history": history, "k": 5}, target),
                ("by history and query", {"history": history, "query": words, "k": 5}, target),
                ("by history, in stock and under 50", {"history": history, "k": 5, "filter": in_stock_under_50}, target),
            ]
            for title, body, tgt in samples:
                answer = client.retrieve(**body, fields=["title"])
                _show(console, title, body, answer, tgt)
            held_out = sequences[:200]
            hits = 0
            for seq in held_out:
                items = client.retrieve(history=seq[:-1], k=10).items
                hits += seq[-1] in {i.item_id for i in items}
            console.print(f"Recall@10 on {len(held_out)} held-out next items: {hits / max(len(held_out), 1):.3f}")
            console.print(f"/stats: {client.stats()}")
        console.print(f"try: curl -s -X POST {server.url}/v1/retrieve -H 'content-type: application/json' "
                      f"-d '{json.dumps({'query': words, 'k': 5, 'fields': ['title']})}'")
        if keep_serving:
            console.print("serving until Ctrl-C")
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                pass
