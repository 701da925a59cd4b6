"""The evaluation runner end to end on synthetic histories: report, resume, and equality with the service pipeline."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from indexer.data.synthetic import SyntheticConfig, generate, write
from indexer.evaluation.baselines import SASRecConfig
from indexer.evaluation.cases import load_eval_data
from indexer.evaluation.config import EvalConfig
from indexer.evaluation.metrics import recall_at
from indexer.evaluation.runner import evaluate_decoder, run_all, sample_cases, with_validation_items
from indexer.quantizers import QuantizerConfig
from indexer.training.config import TrainConfig
from indexer.training.validation import sample_cases as pick_cases
from model_store import Store
from sidcore.decoder.model import TinyConfig

TINY = TinyConfig(hidden_size=64, layers=2, heads=2, kv_heads=1, head_dim=32, intermediate_size=128)
CFG = EvalConfig(
    methods=("rq-kmeans", "sa2crq"),
    baselines=("popularity", "bm25", "dense", "sasrec"),
    ks=(1, 5, 10, 20),
    quantizer=QuantizerConfig(sizes=(4, 8, 16), epochs=3, latent_dim=8, hidden=(32,)),
    train=TrainConfig(epochs=3, batch_tokens=1024, val_cases=30, tiny=TINY, text_vocab=300),
    sasrec=SASRecConfig(dim=32, epochs=3),
    max_cases=40,
    hallucination_cases=16,
)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    synth = generate(SyntheticConfig(num_items=400, dim=16, seed=2))
    paths = write(synth, d / "data", num_users=150, seed=2)
    data = load_eval_data(d / "data", vectors=paths["vectors"])
    logs: list[str] = []
    report = run_all(data, CFG, d / "out", progress=False, log=logs.append)
    return data, report, d / "out", logs


def test_report_schema_and_files(evaluated):
    data, report, out, _ = evaluated
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["methods"].keys() == {"rq-kmeans", "sa2crq"}
    assert on_disk["baselines"]["bm25"] == {"skipped": "the cases have no text queries"}
    for kind in ("methods", "baselines"):
        for name in ("rq-kmeans", "sa2crq") if kind == "methods" else ("popularity", "dense", "sasrec"):
            r = on_disk[kind][name]
            for metric in ("recall", "ndcg", "mrr"):
                assert set(r[metric]) == {"1", "5", "10", "20"}
                for k, g in r[metric].items():
                    assert set(g) == {"overall", "head", "tail"}
                    assert all(0.0 <= v <= 1.0 for v in g.values())
            assert r["recall"]["1"]["overall"] <= r["recall"]["20"]["overall"]
            assert 0 < r["ret_per"] <= 20
            assert 0 < r["coverage"]["1"] <= r["coverage"]["20"] <= len(data.catalog)
    for name in ("rq-kmeans", "sa2crq"):
        r = on_disk["methods"][name]
        assert 0.0 <= r["hallucination"] <= 1.0
        assert r["hallucination_detail"]["cases"] == 16
        assert set(r["sid_length"]) == {"overall", "head", "tail"}
        assert r["quality"]["num_items"] == len(data.catalog)
    assert on_disk["methods"]["rq-kmeans"]["sid_length"]["overall"] == 3.0  # fixed length
    assert on_disk["methods"]["sa2crq"]["sid_length"]["overall"] < 3.0  # SARQ shortens some
    assert on_disk["baselines"]["popularity"]["hallucination"] is None
    assert on_disk["data"]["cases"] == 40
    assert on_disk["data"]["head_cases"] + on_disk["data"]["tail_cases"] == 40
    assert on_disk["seeds"]["quantizer"] == 0 and on_disk["packages"]["torch"]
    assert on_disk["config"]["train"]["epochs"] == 3
    for plot in ("items_per_sid.png", "layer_tokens.png", "sid_length.png", "recall.png"):
        assert (out / plot).stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "| sa2crq |" in md and "| sasrec |" in md and "bm25: the cases have no text queries" in md


def test_metrics_recomputed_from_returned_items(evaluated):
    data, report, out, _ = evaluated
    cases = sample_cases(data, CFG.max_cases, CFG.seed).cases
    for name in ("rq-kmeans", "sa2crq"):
        ranked = [json.loads(line)["items"] for line in (out / "methods" / name / "ranked.jsonl").open()]
        assert len(ranked) == len(cases)
        expected = np.mean([recall_at(r, c.relevant, 10) for r, c in zip(ranked, cases)])
        assert report["methods"][name]["recall"]["10"]["overall"] == pytest.approx(expected)


def test_eval_equals_the_service_pipeline(evaluated):
    """The items and scores the evaluation recorded are what a Retriever built as the service builds it returns."""
    from sidcore.decoder.bundle import load_decoder
    from sidcore.engines.torch_engine import TorchEngine
    from sidcore.index.artifact import load_index
    from sidcore.index.mask import TrieMask
    from sidcore.index.trie import Trie
    from sidcore.retriever import Query, Retriever

    data, report, out, _ = evaluated
    cases = sample_cases(data, CFG.max_cases, CFG.seed).cases[:12]
    store = Store(out / "methods" / "sa2crq" / "store")
    decoder = load_decoder(store)
    trie = Trie.from_artifact(load_index(store, decoder.spec.index_version))
    retriever = Retriever(decoder, TorchEngine(decoder, TrieMask(trie, decoder.spec.vocab)), beam_width=20, max_beam_width=128)
    # one request at a time, as HTTP requests arrive, against the eval's batches of 32
    results = [retriever.retrieve(trie, [Query(c.query, c.history, k=20)])[0][0] for c in cases]
    recorded = [json.loads(line) for line in (out / "methods" / "sa2crq" / "ranked.jsonl").open()][:12]
    for res, rec in zip(results, recorded):
        assert [h.item_id for h in res.items] == rec["items"]
        assert [h.score for h in res.items] == pytest.approx(rec["scores"], abs=1e-4)


@pytest.mark.parametrize("exclude_history", [True, False])
def test_live_service_matches_eval(live_service, exclude_history):
    """The eval's rankings are what the HTTP service answers for the same cases, asked through
    sa2crq.client, with the history left out (both defaults) or kept (both set so)."""
    from sa2crq.client import Client

    live = live_service
    data = load_eval_data(live.data_dir)
    data = sample_cases(data, 8, 0)
    cfg = EvalConfig(methods=(), baselines=("popularity",), ks=(10,), hallucination_cases=0, exclude_history=exclude_history)
    _, records = evaluate_decoder(live.store, data, cfg, progress=False)
    with Client(live.url) as client:
        for case, rec in zip(data.cases, records):
            got = client.retrieve(case.query, case.history, k=10, exclude_history=exclude_history)
            assert [it.item_id for it in got.items] == rec["items"]
            if exclude_history:
                assert not set(rec["items"]) & set(case.history)


def test_history_items_are_left_out_of_every_ranking_and_the_report_says_so(evaluated):
    data, report, out, _ = evaluated
    cases = sample_cases(data, CFG.max_cases, CFG.seed).cases
    assert report["config"]["exclude_history"] is True
    assert "history items excluded from every ranking" in (out / "report.md").read_text()
    for kind, names in (("methods", ("rq-kmeans", "sa2crq")), ("baselines", ("popularity", "dense", "sasrec"))):
        for name in names:
            ranked = [json.loads(line)["items"] for line in (out / kind / name / "ranked.jsonl").open()]
            assert all(not set(r) & set(c.history) for r, c in zip(ranked, cases)), (kind, name)
            if kind == "baselines":  # asked for more, so max(K) items remain without the history
                assert all(len(r) == max(CFG.ks) for r in ranked), name


def test_resume_reuses_finished_runs(evaluated):
    data, report, out, logs = evaluated
    assert not any("reusing" in m for m in logs)
    index_version = report["methods"]["rq-kmeans"]["index_version"]
    (out / "methods" / "rq-kmeans" / "result.json").unlink()  # as if killed while decoding
    logs2: list[str] = []
    again = run_all(data, CFG, out, progress=False, log=logs2.append)
    assert sum("reusing" in m for m in logs2) == 5  # sa2crq and the four baselines
    assert not any("building" in m or "training" in m for m in logs2)  # rq-kmeans kept its index and decoder
    assert again["methods"]["rq-kmeans"]["index_version"] == index_version
    for kind in ("methods", "baselines"):
        for name, r in report[kind].items():
            assert again[kind][name].get("recall") == r.get("recall")


def test_an_item_weight_override_decodes_again_with_the_same_decoder(evaluated):
    """Each decoder's rankings use the item weight its validation chose (the report says which);
    ``item_weight`` (and ``item_prior``) override it for every method, as the service's settings do, keeping the
    index and the decoder."""
    data, report, out, _ = evaluated
    before = report["methods"]["sa2crq"]
    assert before["item_weight"] == before["decoder_summary"]["item_weight"]
    assert before["item_prior"] == before["decoder_summary"]["item_prior"]  # the prior is the decoder's own
    assert set(before["decoder_summary"]["val_recall@10_by_item_weight"]) == {f"{w:g}" for w in TrainConfig().item_weights}
    logs: list[str] = []
    cfg = dataclasses.replace(CFG, methods=("sa2crq",), baselines=(), item_weight=2.0, item_prior=0.5)
    after = run_all(data, cfg, out, progress=False, log=logs.append)["methods"]["sa2crq"]
    assert not any("building" in m or "training" in m for m in logs)
    assert after["decoder_version"] == before["decoder_version"] and after["item_weight"] == 2.0 and after["item_prior"] == 0.5
    ranked = [json.loads(line)["items"] for line in (out / "methods" / "sa2crq" / "ranked.jsonl").open()]
    assert all(not set(r) & set(c.history) for r, c in zip(ranked, sample_cases(data, CFG.max_cases, CFG.seed).cases))
    with pytest.raises(Exception, match="item_weight"):
        EvalConfig(item_weight=-1.0)
    with pytest.raises(Exception, match="item_prior"):
        EvalConfig(item_prior=-1.0)


def test_changed_decoder_budget_keeps_the_index(evaluated):
    """Runs last in this module: it replaces the rq-kmeans run's decoder."""
    import dataclasses

    data, report, out, _ = evaluated
    before = report["methods"]["rq-kmeans"]
    cfg = dataclasses.replace(CFG, methods=("rq-kmeans",), baselines=(), train=dataclasses.replace(CFG.train, max_steps=5))
    logs: list[str] = []
    after = run_all(data, cfg, out, progress=False, log=logs.append)["methods"]["rq-kmeans"]
    assert not any("building" in m for m in logs) and any("training" in m for m in logs)
    assert after["index_version"] == before["index_version"]
    assert after["decoder_version"] != before["decoder_version"]
    assert after["decoder_summary"]["steps"] == 5


def test_every_method_can_start_from_a_local_base_checkpoint(evaluated, tmp_path):
    """--base-model: the decoder of each method extends that checkpoint (the GPU path with
    Qwen3-1.7B); a stand-in checkpoint keeps it fast here."""
    import dataclasses

    from sidcore.decoder.bundle import load_decoder
    from sidcore.decoder.model import new_tiny_model
    from sidcore.decoder.tokenizer import train_text_tokenizer

    data, _, _, _ = evaluated
    tok = train_text_tokenizer(data.catalog.texts, 300)
    new_tiny_model(TINY, len(tok), tok.pad_token_id, seed=0).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    cfg = dataclasses.replace(CFG, methods=("rq-kmeans",), baselines=(), base_model=tmp_path / "base",
                              train=dataclasses.replace(CFG.train, max_steps=3, val_cases=0))
    report = run_all(data, cfg, tmp_path / "out", progress=False, log=lambda _m: None)
    run = report["methods"]["rq-kmeans"]
    assert report["config"]["base_model"] == str(tmp_path / "base")
    decoder = load_decoder(Store(tmp_path / "out" / "methods" / "rq-kmeans" / "store"), run["decoder_version"])
    assert decoder.spec.model == str(tmp_path / "base") and run["decoder_summary"]["steps"] == 3
    assert 0 <= run["recall"]["10"]["overall"] <= 1


def test_train_valid_gives_every_learner_the_validation_items_no_one_validates_on(evaluated):
    data = evaluated[0]
    off = dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, train_valid=False))
    assert with_validation_items(data, off) is data
    cfg = dataclasses.replace(CFG, sasrec=dataclasses.replace(CFG.sasrec, val_cases=50), rules=dataclasses.replace(CFG.rules, val_cases=40))
    assert cfg.train.train_valid  # the default
    extended = with_validation_items(data, cfg)
    assert len(extended.train_sequences) == len(data.train_sequences) and extended.cases == data.cases
    scored = set(pick_cases(data.training.valid, 50, cfg.seed)) | set(pick_cases(data.training.valid, 30, cfg.train.seed))
    assert len(scored) == 50  # the decoder's 30 are the first of the baselines' 50 (one seeded order)
    grew = [len(b) - len(a) for a, b in zip(data.train_sequences, extended.train_sequences)]
    assert sorted(set(grew)) == [0, 1] and sum(grew) == len(data.training.valid) - 50
    for e in scored:  # a validation user's item stays unseen by the index, the rules and SASRec
        assert list(e.history) in extended.train_sequences and list(e.history) + [e.target] not in extended.train_sequences
