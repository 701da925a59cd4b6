"""The load tools: the request mix, a 20-second headless Locust run and a short soak with chaos.

Locust and the soak runner run as child processes (Locust patches the standard library with
gevent, which must not happen inside pytest).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOADTEST = ROOT / "loadtest"


def _load_mix():
    spec = importlib.util.spec_from_file_location("loadtest_mix", LOADTEST / "mix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mix = _load_mix()


@pytest.fixture
def data_dir(tmp_path) -> Path:
    items = [{"item_id": i, "title": f"red wireless gaming mouse model {i}"} for i in range(20)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    seqs = [{"user_id": u, "item_ids": list(range(u, u + 5))} for u in range(10)]
    (tmp_path / "sequences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seqs))
    return tmp_path


def test_mix_draws_valid_requests_of_every_kind(data_dir):
    catalog = mix.Catalog(data_dir, max_history=3)
    stream = mix.RequestMix(catalog, [5, 10], [None, 20], mix.parse_mix(mix.DEFAULT_MIX), seed=1)
    titles = set(catalog.titles)
    kinds = []
    for _ in range(400):
        kind, body = stream.next()
        kinds.append(kind)
        assert body["k"] in (5, 10)
        assert body.get("beam_width") in (None, 20)
        assert set(body) <= {"k", "beam_width", "query", "history"}
        if kind == "query":
            assert body["query"] in titles and "history" not in body
        elif kind == "words":
            assert 2 <= len(body["query"].split()) <= 4 and any(body["query"] in t for t in titles)
        else:
            hist = body["history"]
            assert 1 <= len(hist) <= 3 and all(isinstance(i, str) for i in hist)
            assert any(seq[-len(hist):] == hist for seq in catalog.histories)  # a user's newest items
            assert ("query" in body) == (kind == "both")
    counts = {k: kinds.count(k) for k in mix.NEEDS}
    assert all(counts[k] > 20 for k in counts), counts  # weights 35/15/35/15 of 400
    assert counts["query"] > counts["words"] and counts["history"] > counts["both"]


def test_mix_is_seeded_and_drops_kinds_the_catalog_cannot_feed(data_dir):
    catalog = mix.Catalog(data_dir)
    a = mix.RequestMix(catalog, [10], [None], mix.parse_mix(mix.DEFAULT_MIX), seed=7)
    b = mix.RequestMix(catalog, [10], [None], mix.parse_mix(mix.DEFAULT_MIX), seed=7)
    assert [a.next() for _ in range(50)] == [b.next() for _ in range(50)]
    (data_dir / "sequences.jsonl").unlink()
    titles_only = mix.RequestMix(mix.Catalog(data_dir), [10], [None], mix.parse_mix(mix.DEFAULT_MIX))
    assert set(titles_only.kinds) == {"query", "words"}
    with pytest.raises(ValueError, match="no request kind"):
        mix.RequestMix(mix.Catalog(data_dir), [10], [None], mix.parse_mix("history=1"))
    with pytest.raises(ValueError, match="unknown kinds"):
        mix.parse_mix("query=1,typo=2")


def test_check_answer_flags_contract_breaks():
    body = {"k": 2}
    good = {"items": [{"item_id": "1", "sid": "1-2", "score": -1.0}], "index_version": "i", "model_version": "m"}
    assert mix.check_answer(body, 200, good) is None
    assert mix.check_answer(body, 429, None) == "status 429"
    assert mix.check_answer(body, 200, {**good, "items": good["items"] * 3}) == "3 items for k=2"
    assert mix.check_answer(body, 200, {**good, "index_version": ""}) == "no index or model version"
    assert mix.check_answer(body, 200, {**good, "items": [{"item_id": "1", "sid": ""}]}) == "an item without id or SID"
    assert mix.check_answer(body, 200, {"items": []}).startswith("malformed answer")


def _runner(url: str, users: int, seconds: int, data_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(LOADTEST / "run.sh"), url, str(users), str(seconds), str(data_dir), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, cwd=ROOT,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})


def test_headless_locust_20s_against_the_live_service_has_no_failure(live_service, tmp_path):
    done = _runner(live_service.url, 4, 20, live_service.data_dir, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(tmp_path / "locust_stats.csv", newline="") as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) == 0
    assert int(total["Request Count"]) >= 20  # the tiny model answers in tens of ms: far more than 1/s
    assert {f"/v1/retrieve [{k}]" for k in mix.NEEDS} <= set(rows)  # every kind of the mix was sent
    assert (tmp_path / "report.html").stat().st_size > 1000
    line = next(l for l in done.stdout.splitlines() if l.startswith("QPS "))
    assert re.match(r"QPS [\d.]+  p50 \d+ ms  p95 \d+ ms  p99 \d+ ms  requests \d+  failures 0", line), line


def test_runner_exits_non_zero_when_requests_fail(live_service, tmp_path):
    # beam_width above the service's max_beam_width: every request is a 422.
    done = _runner(live_service.url, 1, 6, live_service.data_dir, tmp_path, "--beam-widths", "100000")  # 6 s: locust may take seconds to start on a busy machine
    assert done.returncode == 1
    assert "status 422" in done.stdout
    with open(tmp_path / "locust_stats.csv", newline="") as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    assert int(total["Failure Count"]) == int(total["Request Count"]) > 0


def test_soak_survives_redis_restart_and_version_flip(live_service, tmp_path):
    """Self-hosted soak: its own Redis and `sa2crq serve` on the live service's store, 45 s at 4 req/s."""
    store = getattr(live_service.store, "root", live_service.store)
    cmd = [sys.executable, str(LOADTEST / "soak.py"), "--store", str(store), "--data", str(live_service.data_dir),
           "--minutes", "0.75", "--rate", "4", "--redis-down", "1", "--beam-widths", "default,8"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "Redis restarted in" in out
    flips = re.findall(r"activated (\S+) \(was (\S+)\)", out)
    assert len(flips) == 2 and flips[0][0] == flips[1][1] == flips[0][1] + "-soak" and flips[1][0] == flips[0][1]
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] in (["before"], ["during"], ["after"], ["total"])}
    assert set(rows) == {"before", "during", "after", "total"}
    assert all(int(line.split()[3]) == 0 for line in rows.values())  # failures per phase
    assert int(rows["total"].split()[2]) == 180  # 45 s x 4 requests/s, every one answered or counted
    b = flips[0][0]
    assert f"{b} x" in rows["during"] and b not in rows["before"] + rows["after"]  # B answered during, only then
