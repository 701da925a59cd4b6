"""The /v1 API over real HTTP on the tiny decoder and a real Redis: exclusions, filters, stored
fields, batch, lookups, attribute updates followed by replicas, auth, and the old paths as aliases."""

from __future__ import annotations

import time

import httpx
import pytest

from indexer.data.catalog import load_sequences
from sa2crq.client import Client, ServiceError, request
from service.sync import TrieSync
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index.attributes import Condition, Filter
from sidcore.index.redis_index import RedisIndex
from sidcore.retriever import Query, Retriever
from sidcore.sid import format_sid

AVAILABLE = {"must": [{"field": "available", "value": True}]}


@pytest.fixture(scope="module")
def svc(start_service):
    """A service of this module's own: its tests change attributes."""
    return start_service()


@pytest.fixture(scope="module")
def http(svc):
    with httpx.Client(base_url=svc.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def client(svc):
    with Client(svc.url, admin_token=svc.admin_token) as c:
        yield c


@pytest.fixture(scope="module")
def histories(tiny_stack):
    return load_sequences(tiny_stack.data_dir / "sequences.jsonl")[:10]


@pytest.fixture(scope="module")
def retriever(tiny_stack):
    return Retriever(tiny_stack.decoder, TorchEngine(tiny_stack.decoder, tiny_stack.mask), beam_width=20, max_beam_width=32)


def ids(answer) -> list[str]:
    return [i.item_id for i in answer.items]


def test_v1_and_the_old_paths_answer_alike(http, tiny_stack, histories):
    body = {"history": histories[0], "k": 10}
    old, new = http.post("/retrieve", json=body), http.post("/v1/retrieve", json=body)
    assert old.status_code == new.status_code == 200
    assert [i["item_id"] for i in old.json()["items"]] == [i["item_id"] for i in new.json()["items"]]
    for path in ("/healthz", "/readyz", "/metrics", "/stats"):
        assert http.get(path).status_code == http.get(f"/v1{path}").status_code == 200
    spec = http.get("/openapi.json").json()
    assert all(p.startswith("/v1/") for p in spec["paths"])
    assert spec["paths"]["/v1/attributes"]["post"]["security"] == [{"AdminToken": []}]
    assert "security" not in spec["paths"]["/v1/retrieve"]["post"]  # no API key configured
    scheme = spec["components"]["securitySchemes"]["AdminToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_metrics_count_an_alias_and_its_v1_path_as_one_endpoint(http, tiny_stack):
    from promtext import sample

    before = http.get("/metrics").text
    http.post("/retrieve", json={"query": "x", "k": 2})
    http.post("/v1/retrieve", json={"query": "x", "k": 2})
    http.get(f"/v1/items/{tiny_stack.catalog.item_ids[0]}")
    http.get("/v1/items/no-such-item")
    after = http.get("/metrics").text
    delta = lambda name, **lb: sample(after, name, **lb) - sample(before, name, **lb)  # noqa: E731
    assert delta("sa2crq_requests_total", endpoint="/retrieve", status="200") == 2
    assert delta("sa2crq_requests_total", endpoint="/items/{item_id:path}", status="200") == 1
    assert delta("sa2crq_requests_total", endpoint="/items/{item_id:path}", status="404") == 1


def test_history_is_excluded_by_default_and_k_items_come_back(client, tiny_stack, histories, retriever):
    for history in histories[:5]:
        answer = client.retrieve(history=history, k=15)
        assert len(answer.items) == 15 and not set(ids(answer)) & set(history)
        (expected,), _ = retriever.retrieve(tiny_stack.snapshot, [Query(history=tuple(history), k=15)])
        assert ids(answer) == [i.item_id for i in expected.items]
        kept = client.retrieve(history=history, k=15, exclude_history=False)
        (expected,), _ = retriever.retrieve(tiny_stack.snapshot, [Query(history=tuple(history), k=15, exclude_history=False)])
        assert ids(kept) == [i.item_id for i in expected.items]


def test_filters_and_exclude_ids_equal_the_retriever(client, tiny_stack, histories, retriever):
    snap = tiny_stack.snapshot
    body = {"must": [{"field": "category", "any": ["Toys", "Books", "Pets"]}, {"field": "price", "range": {"gte": 5, "lt": 120}}],
            "must_not": [{"field": "available", "value": False}]}
    core = Filter(must=(Condition.any_of("category", ["Toys", "Books", "Pets"]), Condition.range("price", gte=5, lt=120)),
                  must_not=(Condition.eq("available", False),))
    for history in histories[:4]:
        answer = client.retrieve(history=history, k=10, filter=body, exclude_ids=[history[0], "unknown-id"])
        (expected,), _ = retriever.retrieve(snap, [Query(history=tuple(history), k=10, filter=core, exclude_ids=(history[0], "unknown-id"))])
        assert ids(answer) == [i.item_id for i in expected.items] and len(answer.items) == 10
        for item_id in ids(answer):
            attrs = snap.attributes.row(int(snap.trie.rows_of([item_id])[0]))
            assert attrs["category"] in ("Toys", "Books", "Pets") and 5 <= attrs["price"] < 120 and attrs["available"] is True


def test_a_filter_that_keeps_nothing_is_200_with_a_reason(client):
    answer = client.retrieve(query="anything", filter={"must": [{"field": "brand", "value": "no such brand"}]})
    assert answer.items == [] and "no item" in answer.reason


@pytest.mark.parametrize(
    "extra, loc, words",
    [
        ({"filter": {"must": [{"field": "colour", "value": "red"}]}}, ["body", "filter", "must", 0, "field"], "unknown attribute 'colour'"),
        ({"filter": {"must_not": [{"field": "price", "value": "cheap"}]}}, ["body", "filter", "must_not", 0, "value"], "numeric"),
        ({"filter": {"must": [{"field": "available", "any": [True, 3]}]}}, ["body", "filter", "must", 0, "any", 1], "boolean"),
        ({"filter": {"must": [{"field": "category", "range": {"gt": 1}}]}}, ["body", "filter", "must", 0, "range"], "numeric"),
        ({"filter": {"must": [{"field": "price"}]}}, ["body", "filter", "must", 0], "exactly one"),
        ({"filter": {"must": [{"field": "price", "range": {}}]}}, ["body", "filter", "must", 0, "range"], "at least one"),
        ({"filter": {"should": []}}, ["body", "filter", "should"], ""),
        ({"fields": ["title", "colour"]}, ["body", "fields", 1], "stores no field 'colour'"),
        ({"exclude_ids": ["x"] * 1001}, ["body", "exclude_ids"], "1000"),
        ({"exclude_history": "no"}, ["body", "exclude_history"], ""),
    ],
)
def test_bad_filters_fields_and_exclusions_are_422_naming_the_field(http, extra, loc, words):
    r = http.post("/v1/retrieve", json={"query": "x", **extra})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["loc"][: len(loc)] == loc and words in d["msg"] for d in detail), detail


def test_fields_come_with_each_item(client, tiny_stack):
    titles = dict(zip(tiny_stack.catalog.item_ids, tiny_stack.catalog.texts))
    answer = client.retrieve(query=tiny_stack.catalog.texts[7], k=8, fields=["title"])
    assert len(answer.items) == 8 and answer.warnings == []
    assert all(i.fields == {"title": titles[i.item_id]} for i in answer.items)
    raw = httpx.post(f"{client.base_url}/v1/retrieve", json={"query": "x", "k": 2}).json()
    assert all("fields" not in i for i in raw["items"])  # only when asked for


def test_batch_answers_equal_single_answers_and_errors_stay_per_entry(client, tiny_stack, histories):
    requests = [request(history=h, k=7, filter=AVAILABLE if i % 2 else None, fields=["title"] if i % 3 == 0 else None)
                for i, h in enumerate(histories)]
    requests.insert(2, {"query": "x", "k": 0})  # invalid by the schema
    requests.insert(5, {"history": ["no-such-item", histories[0][0]]})  # invalid for the index
    requests.insert(7, {"query": "x", "filter": {"must": [{"field": "colour", "value": "red"}]}})
    results = client.retrieve_batch(requests)
    assert len(results) == len(requests)
    assert [r.status for r in results][2] == 422 and results[2].detail[0]["loc"] == ["body", "requests", 2, "k"]
    assert results[5].status == 422 and results[5].detail[0]["loc"] == ["body", "requests", 5, "history", 0]
    assert results[7].status == 422 and results[7].detail[0]["loc"] == ["body", "requests", 7, "filter", "must", 0, "field"]
    for req, res in zip(requests, results):
        if res.status != 200:
            continue
        single = client.retrieve(**{k: v for k, v in req.items() if k != "exclude_history"})
        assert ids(res.response) == ids(single)
        assert [i.fields for i in res.response.items] == [i.fields for i in single.items]


def test_batch_limits(http, svc):
    too_many = http.post("/v1/retrieve/batch", json={"requests": [{"query": "x"}] * 65})
    assert too_many.status_code == 422 and "64" in too_many.json()["detail"][0]["msg"]
    assert http.post("/v1/retrieve/batch", json={"requests": []}).status_code == 422
    assert http.post("/v1/retrieve/batch", json={"requests": [1, 2]}).status_code == 422
    only_bad = http.post("/v1/retrieve/batch", json={"requests": [{"k": 3}]})
    assert only_bad.status_code == 200 and only_bad.json()["results"][0]["status"] == 422


def test_lookups_explain_an_answer(client, http, tiny_stack):
    answer = client.retrieve(query=tiny_stack.catalog.texts[11], k=3)
    top = answer.items[0]
    info = client.item(top.item_id)
    assert info.sid == top.sid and info.fields == {"title": dict(zip(tiny_stack.catalog.item_ids, tiny_stack.catalog.texts))[top.item_id]}
    assert set(info.attributes) == {"category", "brand", "price", "available"}
    sid = client.sid(top.sid)
    assert top.item_id in sid.items and sid.num_items == len(tiny_stack.trie.items_of(tiny_stack.trie.node_of_item(top.item_id)))
    assert http.get("/v1/items/no-such-item").status_code == 404
    assert http.get("/v1/sids/3-3-5-1").status_code == 404
    assert http.get("/v1/sids/99999999999999999999").status_code == 404
    trie = tiny_stack.trie
    prefix = next(n for n in range(1, trie.num_nodes) if not trie.terminal[n])
    r = http.get(f"/v1/sids/{format_sid(trie.sid_of(prefix))}")
    assert r.status_code == 404 and "prefix" in r.json()["detail"]
    bad = http.get("/v1/sids/12-x")
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["path", "sid"]
    with pytest.raises(ServiceError) as e:
        client.item("no-such-item")
    assert e.value.status == 404


def test_attribute_updates_need_the_admin_token(http, svc):
    body = {"items": [{"item_id": "0", "attributes": {"available": False}}]}
    assert http.post("/v1/attributes", json=body).status_code == 401
    r = http.post("/v1/attributes", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    auth = {"Authorization": f"Bearer {svc.admin_token}"}
    assert http.post("/v1/attributes", json={"items": [{"item_id": "nope", "attributes": {"available": False}}]}, headers=auth).status_code == 404
    wrong = http.post("/v1/attributes", json={"items": [{"item_id": "0", "attributes": {"available": "no"}}]}, headers=auth)
    assert wrong.status_code == 422 and "boolean" in wrong.json()["detail"][0]["msg"]


def test_an_availability_flip_reaches_a_subscribed_replica_within_a_second(client, svc, tiny_stack):
    """Replica A is the HTTP service, replica B a TrieSync of its own on the same Redis."""
    target = client.retrieve(query=tiny_stack.catalog.texts[20], k=5, filter=AVAILABLE).items[0].item_id
    with TrieSync(svc.redis_url) as replica:
        assert replica.wait_ready(30)
        row = int(replica.snapshot.trie.rows_of([target])[0])
        assert replica.snapshot.attributes["available"].value(row) is True
        with svc.redis.client() as r:
            started = time.perf_counter()
            RedisIndex(r).set_attributes(None, [(target, {"available": False})])  # as `sa2crq index set-attributes` does
        while replica.snapshot.attributes["available"].value(row) is not False:
            assert time.perf_counter() - started < 1.0, "replica B did not see the flip within a second"
            time.sleep(0.005)
        while target in ids(client.retrieve(query=tiny_stack.catalog.texts[20], k=5, filter=AVAILABLE)):
            assert time.perf_counter() - started < 1.0, "replica A did not see the flip within a second"
        assert client.item(target).attributes["available"] is False
    # and back, through the admin route, which returns once this replica shows it
    client.set_attributes({target: {"available": True}})
    assert target in ids(client.retrieve(query=tiny_stack.catalog.texts[20], k=5, filter=AVAILABLE))


def test_fields_degrade_while_redis_is_down(start_service, tiny_stack):
    svc = start_service()
    with Client(svc.url) as c:
        assert c.retrieve(query="kettle", k=3, fields=["title"]).items[0].fields is not None
        svc.redis.stop(keep_data=True)
        try:
            deadline = time.monotonic() + 20
            while c.ready()["status"] != "degraded":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            answer = c.retrieve(query="kettle", k=3, fields=["title"])
            assert len(answer.items) == 3 and all(i.fields is None for i in answer.items)
            assert "Redis unreachable" in answer.warnings[0]
            info = c.item(answer.items[0].item_id)
            assert info.fields is None and info.attributes and info.warnings
        finally:
            svc.redis.restart()


def test_an_api_key_guards_the_read_routes(start_service):
    svc = start_service(api_key="s3cret-key")
    assert httpx.post(f"{svc.url}/v1/retrieve", json={"query": "x"}).status_code == 401
    assert httpx.post(f"{svc.url}/retrieve", json={"query": "x"}, headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.get(f"{svc.url}/v1/healthz").status_code == 200  # probes stay open
    with Client(svc.url, api_key="s3cret-key") as c:
        assert len(c.retrieve(query="x", k=3).items) == 3
        assert c.retrieve_batch([request(query="y", k=2)])[0].status == 200
    spec = httpx.get(f"{svc.url}/openapi.json").json()
    assert spec["paths"]["/v1/retrieve"]["post"]["security"] == [{"ApiKey": []}]


def test_the_candidate_settings_reach_the_served_retriever(live_service, start_service):
    """SA2CRQ_FUSED_BEAMS_PER_ITEM and SA2CRQ_HEAD_PROPOSALS_PER_ITEM size the candidates of the
    requests the item head re-ranks."""
    from service.settings import Settings

    served = live_service.runtime.served().retriever
    assert (served.fused_beams_per_item, served.head_proposals_per_item) == (Settings().fused_beams_per_item, Settings().head_proposals_per_item)
    changed = start_service(fused_beams_per_item=3, head_proposals_per_item=2).runtime.served().retriever
    assert (changed.fused_beams_per_item, changed.head_proposals_per_item) == (3, 2)
