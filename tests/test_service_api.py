"""POST /retrieve, /items, health, readiness, metrics and stats over real HTTP, on a tiny trained decoder."""

from __future__ import annotations

import httpx
import pytest
from promtext import sample

from indexer.data.catalog import load_sequences
from sidcore.retriever import Query, Retriever
from sidcore.sid import format_sid


@pytest.fixture(scope="module")
def http(live_service):
    with httpx.Client(base_url=live_service.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def histories(tiny_stack):
    return load_sequences(tiny_stack.data_dir / "sequences.jsonl")[:20]


def _item_sid(tiny_stack, item_id: str) -> str:
    return format_sid(tiny_stack.trie.sid_of(tiny_stack.trie.node_of_item(item_id)))


def test_retrieve_by_query_returns_index_items_with_their_sids(http, tiny_stack, live_service):
    r = http.post("/retrieve", json={"query": tiny_stack.catalog.texts[0], "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 7
    assert body["index_version"] == tiny_stack.decoder.spec.index_version
    assert body["model_version"] == tiny_stack.decoder.version
    assert body["took_ms"] > 0
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
    for item in body["items"]:
        assert _item_sid(tiny_stack, item["item_id"]) == item["sid"]
    assert len({i["item_id"] for i in body["items"]}) == 7


@pytest.mark.parametrize("with_query", [False, True])
def test_retrieve_by_history_and_both_equals_the_retriever(http, tiny_stack, histories, with_query):
    """The service's answer is exactly the shared pipeline's answer for the same request."""
    from sidcore.engines.torch_engine import TorchEngine

    retriever = Retriever(tiny_stack.decoder, TorchEngine(tiny_stack.decoder, tiny_stack.mask), beam_width=20, max_beam_width=32)
    for history in histories[:5]:
        query = tiny_stack.catalog.texts[1] if with_query else None
        r = http.post("/retrieve", json={"history": history, "query": query, "k": 10})
        assert r.status_code == 200, r.text
        [expected], _ = retriever.retrieve(tiny_stack.trie, [Query(query, tuple(history), 10)])
        got = r.json()["items"]
        assert [i["item_id"] for i in got] == [i.item_id for i in expected.items]
        assert [i["score"] for i in got] == pytest.approx([i.score for i in expected.items], abs=1e-4)


def test_beam_width_defaults_and_k_caps(http, tiny_stack):
    small = http.post("/retrieve", json={"query": "x", "k": 1, "beam_width": 1}).json()["items"]
    assert len(small) == 1
    wide = http.post("/retrieve", json={"query": "x", "k": 30}).json()["items"]
    assert len(wide) == 30  # k=30 raises the default beam of 20 to 30 SIDs, which hold >= 30 items


@pytest.mark.parametrize(
    "body, loc",
    [
        ({}, ["body"]),
        ({"query": "   "}, ["body"]),
        ({"query": "", "history": []}, ["body"]),
        ({"query": "x", "k": 0}, ["body", "k"]),
        ({"query": "x", "k": 1001}, ["body", "k"]),
        ({"query": "x", "k": "10"}, ["body", "k"]),
        ({"query": "x", "k": 2.5}, ["body", "k"]),
        ({"query": "x", "beam_width": 0}, ["body", "beam_width"]),
        ({"query": "x", "beam_width": 33}, ["body", "beam_width"]),
        ({"query": 12}, ["body", "query"]),
        ({"query": "x" * 2001}, ["body", "query"]),
        ({"history": "item-1"}, ["body", "history"]),
        ({"history": [1, 2]}, ["body", "history", 0]),
        ({"history": [""]}, ["body", "history", 0]),
        ({"history": ["x"] * 501}, ["body", "history"]),
        ({"query": "x", "color": "red"}, ["body", "color"]),
    ],
)
def test_bad_input_is_422_naming_the_field(http, body, loc):
    r = http.post("/retrieve", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["loc"][: len(loc)] == loc for d in detail), detail
    assert "Traceback" not in r.text


def test_unknown_history_ids_are_422_with_their_positions(http, tiny_stack, histories):
    history = [histories[0][0], "no-such-item", histories[0][1], "also-missing"]
    r = http.post("/retrieve", json={"history": history})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["loc"] for d in detail] == [["body", "history", 1], ["body", "history", 3]]
    assert "no-such-item" in detail[0]["msg"]


@pytest.mark.parametrize(
    "content, status",
    [(b"{not json", 422), (b"[1, 2]", 422), (b"null", 422), ("\ufffe".encode("utf-16"), 422)],
)
def test_malformed_bodies_are_4xx(http, content, status):
    r = http.post("/retrieve", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text


def test_oversized_body_is_413(http):
    r = http.post("/retrieve", content=b'{"query": "' + b"x" * (9 << 20) + b'"}', headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "exceeds" in r.json()["detail"]


def test_health_ready_and_openapi(http, tiny_stack):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["index_version"] == tiny_stack.decoder.spec.index_version
    assert body["length_penalty"] == tiny_stack.decoder.spec.length_penalty  # the decoder's own: no setting overrides it here
    assert body["item_weight"] == tiny_stack.decoder.spec.item_weight
    assert body["item_prior"] == tiny_stack.decoder.spec.item_prior
    assert body["num_items"] == tiny_stack.trie.num_items and body["redis"]["connected"] is True
    spec = http.get("/openapi.json").json()
    assert spec["components"]["schemas"]["RetrieveRequest"]["properties"]["k"]["maximum"] == 1000
    assert http.get("/docs").status_code == 200


def test_metrics_move_with_requests(http, tiny_stack):
    before = http.get("/metrics").text
    for _ in range(3):
        assert http.post("/retrieve", json={"query": "metrics", "k": 5}).status_code == 200
    assert http.post("/retrieve", json={"k": 5}).status_code == 422
    after = http.get("/metrics").text
    delta = lambda name, **lb: sample(after, name, **lb) - sample(before, name, **lb)  # noqa: E731
    assert delta("sa2crq_requests_total", endpoint="/retrieve", status="200") == 3
    assert delta("sa2crq_requests_total", endpoint="/retrieve", status="422") == 1
    assert delta("sa2crq_request_latency_seconds_count", endpoint="/retrieve") == 4
    assert delta("sa2crq_batch_size_count") >= 1
    assert delta("sa2crq_decode_steps_count") >= 1
    assert delta("sa2crq_result_sid_length_count") == 15
    assert sum(sample(after, "sa2crq_beams_finished_total", depth=d) for d in ("1", "2", "3")) > 0
    assert sample(after, "sa2crq_index_info", index_version=tiny_stack.decoder.spec.index_version) == 1
    assert sample(after, "sa2crq_trie_items") == tiny_stack.trie.num_items
    assert sample(after, "sa2crq_redis_up") == 1 and sample(after, "sa2crq_ready") == 1


def test_stats_window(http):
    for _ in range(2):
        http.post("/retrieve", json={"query": "stats", "k": 3})
    stats = http.get("/stats").json()
    assert stats["requests"] >= 2 and stats["qps"] > 0
    assert 0 < stats["p50_ms"] <= stats["p99_ms"]
    assert stats["status"] == "ready" and stats["errors"] == 0


def test_insert_items_needs_the_admin_token(http, live_service):
    item = {"item_id": "cold-1", "title": "x", "vector": [0.1] * 16}
    assert http.post("/items", json={"items": [item]}).status_code == 401
    assert http.post("/items", json={"items": [item]}, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_inserted_items_are_retrievable_at_once(http, live_service, tiny_stack):
    auth = {"Authorization": f"Bearer {live_service.admin_token}"}
    # Two new items with the vector of an existing one: they join its SID, after it.
    source = tiny_stack.catalog.item_ids[5]
    vector = tiny_stack.catalog.vectors[5].tolist()
    r = http.post("/items", headers=auth, json={"items": [{"item_id": f"cold-{j}", "vector": vector} for j in range(2)]})
    assert r.status_code == 200, r.text
    body = r.json()
    sid = _item_sid(tiny_stack, source)
    assert [i["sid"] for i in body["items"]] == [sid, sid] and body["new_sids"] == 0
    history = [source, "cold-0"]  # a cold-start item is usable in a history right away
    r = http.post("/retrieve", json={"history": history, "k": 50, "beam_width": 32})
    assert r.status_code == 200, r.text
    assert http.post("/items", headers=auth, json={"items": [{"item_id": "cold-0", "vector": vector}]}).status_code == 409
    bad_dim = http.post("/items", headers=auth, json={"items": [{"item_id": "cold-9", "vector": [0.1] * 3}]})
    assert bad_dim.status_code == 422 and "dimensional" in bad_dim.json()["detail"][0]["msg"]
    huge = http.post("/items", headers=auth, json={"items": [{"item_id": "cold-h", "vector": [1e300] * 16}]})
    assert huge.status_code == 422 and huge.json()["detail"][0]["loc"][:4] == ["body", "items", 0, "vector"]
    mixed = http.post("/items", headers=auth, json={"items": [{"item_id": "a", "title": "t"}, {"item_id": "a", "title": "t"}]})
    assert mixed.status_code == 422


def test_a_blank_admin_token_disables_inserts():
    from service.settings import Settings

    assert Settings(_env_file=None, admin_token="  ").admin_token is None
    assert Settings(_env_file=None, admin_token="s3cret").admin_token.get_secret_value() == "s3cret"


def test_inserts_disabled_without_a_token(start_service):
    svc = start_service(admin_token="")
    r = httpx.post(f"{svc.url}/items", json={"items": [{"item_id": "z", "title": "t"}]}, headers={"Authorization": "Bearer x"})
    assert r.status_code == 403 and "SA2CRQ_ADMIN_TOKEN" in r.json()["detail"]
