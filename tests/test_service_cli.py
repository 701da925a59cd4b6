"""`sa2crq serve` argument checks and the demo's serving step (samples over HTTP, embedded Redis)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from sa2crq.demo import run_samples


def _serve(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sa2crq.cli", "serve", *args], capture_output=True, text=True, timeout=120, env=env)


def test_serve_refuses_a_store_without_a_decoder(tmp_path):
    r = _serve("--store", str(tmp_path / "empty"))
    assert r.returncode == 2
    assert "no decoder version in store" in r.stderr and "sa2crq demo" in r.stderr


def test_serve_refuses_bad_settings(tmp_path, monkeypatch):
    import os

    env = {**os.environ, "SA2CRQ_BEAM_WIDTH": "500", "SA2CRQ_MAX_BEAM_WIDTH": "128"}
    r = _serve("--store", str(tmp_path), env=env)
    assert r.returncode == 2
    assert "beam_width (500) exceeds max_beam_width (128)" in r.stderr
    r = _serve("--store", str(tmp_path), env={**os.environ, "SA2CRQ_LENGTH_PENALTY": "-0.5"})
    assert r.returncode == 2 and "length_penalty" in r.stderr
    r = _serve("--store", str(tmp_path), env={**os.environ, "SA2CRQ_ITEM_WEIGHT": "-1"})
    assert r.returncode == 2 and "item_weight" in r.stderr
    r = _serve("--store", str(tmp_path), env={**os.environ, "SA2CRQ_ITEM_PRIOR": "-1"})
    assert r.returncode == 2 and "item_prior" in r.stderr
    r = _serve("--engine", "onnx")
    assert r.returncode == 2 and "onnx" in r.stderr


def test_the_length_penalty_setting_reaches_the_engine(tiny_decoder):
    from service.runtime import _engine
    from service.settings import Settings

    decoder = tiny_decoder[0]
    chose_1 = dataclasses.replace(decoder, spec=dataclasses.replace(decoder.spec, length_penalty=1.0))
    assert _engine(Settings(_env_file=None), chose_1).length_penalty == 1.0  # by default, the decoder's own
    assert _engine(Settings(_env_file=None, length_penalty=1.5), chose_1).length_penalty == 1.5
    assert _engine(Settings(_env_file=None, length_penalty=0), chose_1).length_penalty == 0.0


def test_demo_samples_run_on_an_embedded_redis(tiny_stack, capsys):
    run_samples(tiny_stack.store.root, tiny_stack.data_dir, redis_url=None)
    out = capsys.readouterr().out
    assert "service up at http://127.0.0.1:" in out
    assert out.count("POST /v1/retrieve") == 4
    assert "by text query" in out and "by history and query" in out and "in stock and under 50" in out
    recall = float(out.split(" held-out next items: ")[1].split()[0])
    assert 0 <= recall <= 1
    assert "'errors': 0" in out


def test_the_service_docs_list_every_setting():
    from pathlib import Path

    from service.settings import settings_table

    page = (Path(__file__).parents[1] / "docs" / "service.md").read_text()
    assert settings_table() in page
