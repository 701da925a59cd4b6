"""Replicas roll from release to release under load: two real services on one Redis, the soak
runner's traffic, flips to a retrained pair and to a pair with other codebook sizes. No request
fails, no answer comes from a wrong pair, readiness never drops on both replicas at once; a
corrupt decoder keeps the old release serving; a pinned replica stays where it is pinned."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import pytest
from promtext import sample

from sa2crq.wiring import background_server
from service.settings import Settings
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index.embedded import EmbeddedRedis
from sidcore.index.redis_index import RedisIndex
from sidcore.index.trie import Trie
from sidcore.retriever import Query, Retriever

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loadtest"))
import soak  # noqa: E402  (loadtest/ is a folder of scripts)


@pytest.fixture
def cluster(tiny_stack, retrained_pair, resized_pair, tmp_path):
    """A Redis with releases a (active), b (retrained, same sizes) and c (other sizes), and a way
    to start replicas on it. Yields (redis, index, start)."""
    redis_server = EmbeddedRedis().start()
    client = redis_server.client()
    index = RedisIndex(client)
    index.publish_release(tiny_stack.store, name="a", activate=True, progress=False)
    index.publish_release(retrained_pair[0], name="b", progress=False)
    index.publish_release(resized_pair[0], name="c", progress=False)
    servers = []

    def start(**overrides):
        # One request per batch: each answer is then computed exactly as the offline check recomputes it.
        settings = Settings(_env_file=None, **{"redis_url": redis_server.url, "port": 0, "max_beam_width": 32, "max_batch": 1,
                                              "replica_id": f"replica-{len(servers)}", "cache_dir": tmp_path / f"cache-{len(servers)}",
                                              **overrides})
        server = background_server(settings).start()
        servers.append(server)
        return server

    yield redis_server, index, start
    for server in servers:
        server.stop()
    client.close()
    redis_server.close()


def _offline(pairs: dict, release: str, body: dict, cache: dict) -> list[str]:
    """The items the named release's (decoder, index) give this request, decoded here."""
    if release not in cache:
        store, art, decoder = pairs[release]
        trie = Trie.from_artifact(art)
        cache[release] = (Retriever(decoder, TorchEngine(decoder), beam_width=20, max_beam_width=32), trie)
    retriever, trie = cache[release]
    q = Query((body.get("query") or "").strip() or None, tuple(body.get("history", ())), body["k"], body.get("beam_width"))
    (result,), _ = retriever.retrieve(trie, [q])
    return [i.item_id for i in result.items]


def test_two_replicas_roll_through_retrained_and_resized_releases_under_soak(cluster, tiny_stack, retrained_pair, resized_pair, tmp_path):
    redis_server, index, start = cluster
    replicas = [start(), start()]
    record = tmp_path / "answers.jsonl"
    args = soak.parse_args(["--url", replicas[0].url, "--url", replicas[1].url, "--redis", redis_server.url,
                            "--data", str(tiny_stack.data_dir), "--minutes", "0.75", "--rate", "6", "--flip-to", "b,c",
                            "--record", str(record), "--k-values", "5,10", "--beam-widths", "default,8"])
    chaos = soak.Chaos(redis_server.url, None, flips=["b", "c"])
    samples, events, readiness = asyncio.run(soak.run(args, [r.url for r in replicas], chaos))

    assert [s.problem for s in samples if s.problem] == []
    assert len(samples) == 270  # 45 s x 6 requests/s, every one answered
    served = {s.release for s in samples}
    assert served == {"a", "b", "c"}, events
    assert soak.all_down(readiness) == 0 and len(readiness) > 100
    assert any(text.startswith("activated release a") for _, text in events)  # back to a at the end

    pairs = {"a": (tiny_stack.store, tiny_stack.art, tiny_stack.decoder), "b": retrained_pair, "c": resized_pair}
    versions = {name: (p[1].version, p[2].version) for name, p in pairs.items()}
    cache: dict = {}
    wrong = []
    for line in record.read_text().splitlines():
        rec = json.loads(line)
        answer = rec["answer"]
        name = answer["release"]
        if (answer["index_version"], answer["model_version"]) != versions[name]:
            wrong.append((name, answer["index_version"], answer["model_version"]))
        elif [i["item_id"] for i in answer["items"]] != _offline(pairs, name, rec["body"], cache):
            wrong.append((name, rec["body"]))
    assert wrong == []


def test_a_corrupt_decoder_keeps_the_old_release_serving_and_is_retried(cluster, retrained_pair):
    redis_server, index, start = cluster
    replica = start()
    http = httpx.Client(base_url=replica.url, timeout=30)
    b = index.release("b")
    k = index.keys.decoder(b.decoder_version)
    good = index.r.hget(k.chunk, "0")
    index.r.hset(k.chunk, "0", good[:-10] + bytes(10))  # corrupt the last bytes of the first chunk
    index.activate_release("b")

    deadline = time.monotonic() + 20
    while (ready := http.get("/readyz").json())["release_error"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready["status"] == "ready" and ready["release"] == "a" and ready["target_release"] == "b"
    assert "checksum mismatch" in ready["release_error"]
    assert ready["release_failures"] >= 1 and ready["release_swaps"] == 1  # only a's first load swapped in
    for i in range(5):
        answer = http.post("/retrieve", json={"query": f"still a {i}", "k": 5}).json()
        assert answer["release"] == "a"
    metrics = http.get("/metrics").text
    assert sample(metrics, "sa2crq_release_load_failures_total", error="StoreError") >= 1
    assert sample(metrics, "sa2crq_release_info", release="a", index_version=index.release("a").index_version,
                  model_version=index.release("a").decoder_version) == 1

    index.r.hset(k.chunk, "0", good)  # repaired: the retry (with backoff) loads it
    deadline = time.monotonic() + 30
    while http.get("/readyz").json()["release"] != "b" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert http.post("/retrieve", json={"query": "now b", "k": 5}).json()["release"] == "b"
    repaired = http.get("/readyz").json()
    assert repaired["release_error"] is None and repaired["release_swaps"] == 2
    http.close()


def test_a_pinned_replica_stays_on_its_release_and_says_so(cluster):
    redis_server, index, start = cluster
    canary, main = start(release="a"), start()
    index.activate_release("b")
    deadline = time.monotonic() + 30
    while httpx.get(f"{main.url}/readyz").json()["release"] != "b" and time.monotonic() < deadline:
        time.sleep(0.2)
    main_stats, canary_stats = httpx.get(f"{main.url}/stats").json(), httpx.get(f"{canary.url}/stats").json()
    assert (main_stats["release"], main_stats["target_release"]) == ("b", "b")
    assert (canary_stats["release"], canary_stats["target_release"]) == ("a", "a")
    assert httpx.get(f"{canary.url}/readyz").json()["pinned"] is True
    assert httpx.post(f"{canary.url}/retrieve", json={"query": "canary", "k": 3}).json()["release"] == "a"
    assert httpx.post(f"{main.url}/retrieve", json={"query": "main", "k": 3}).json()["release"] == "b"
    live = index.live_replicas()
    assert {v["release"] for v in live.values()} == {"a", "b"}
