"""Test-case sources and ``sa2crq eval`` on the command line: bad input exits 2, a small run writes the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.data.synthetic import SyntheticConfig, generate, write
from indexer.evaluation.cases import load_eval_data
from sa2crq.cli import main
from sidcore.errors import DataError
from tests.test_eval_baselines import write_beir, write_histories


@pytest.fixture
def sa2crq(monkeypatch, capsys):
    """Runs the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["sa2crq", *args])
        with pytest.raises(SystemExit) as exc:
            main()
            raise SystemExit(0)
        out = capsys.readouterr()
        return exc.value.code, out.out, out.err

    return run


@pytest.fixture(scope="module")
def histories(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hist")
    return write_histories(d, [f"item {i}" for i in range(6)], [[0, 1, 2, 3, 4], [5, 4, 3], [1, 2]])


def test_default_cases_leave_one_out(histories):
    data = load_eval_data(histories)
    # [1, 2] is too short to hold out two items; the others predict their last item from the rest
    assert [(c.history, set(c.relevant)) for c in data.cases] == [(("0", "1", "2", "3"), {"4"}), (("5", "4"), {"3"})]
    # training popularity ignores the last two items of each sequence
    assert data.catalog.popularity.tolist() == [1, 1, 1, 0, 0, 1]
    assert data.train_sequences == [["0", "1", "2"], ["5"]]


def test_history_test_file(histories, tmp_path):
    test = tmp_path / "test.jsonl"
    test.write_text('{"history": [0, 1], "target": 5}\n\n{"history": [3], "target": 2, "query": "x"}\n')
    data = load_eval_data(histories, test=test)
    assert [(c.query, c.history, set(c.relevant)) for c in data.cases] == [(None, ("0", "1"), {"5"}), ("x", ("3",), {"2"})]
    assert data.test_source == str(test) and data.held_out


def test_beir_test_file_groups_relevant_docs(tmp_path):
    d = write_beir(tmp_path / "beir", ["doc a", "doc b", "doc c"], {"q1": ("first", "0"), "q2": ("second", "1")})
    (tmp_path / "q.jsonl").write_text('{"_id": "x", "text": "both docs"}\n{"_id": "y", "text": "unused"}\n')
    (tmp_path / "q.tsv").write_text("query-id\tcorpus-id\tscore\nx\t0\t1\nx\t2\t1\nx\t1\t0\nx\tmissing\t1\n")
    data = load_eval_data(d, test=tmp_path / "q.jsonl", test_qrels=tmp_path / "q.tsv")
    # score-0 pairs and unknown documents are not relevant; queries without a relevant doc are not cases
    assert [(c.query, set(c.relevant)) for c in data.cases] == [("both docs", {"0", "2"})]
    # popularity from qrels/train.tsv (only q1 -> doc 0)
    assert data.catalog.popularity.tolist() == [1, 0, 0]
    assert data.case_head().tolist() == [False]  # doc 2 is tail


def test_beir_validation_claims_count_toward_no_popularity(tmp_path):
    # twenty claims, each citing its own document; the decoder holds a tenth out to select on
    d = write_beir(tmp_path / "beir", [f"doc {i}" for i in range(20)], {f"q{i}": (f"claim {i}", str(i)) for i in range(20)})
    (d / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{i}\t1\n" for i in range(20)))
    data = load_eval_data(d)
    held = {e.target for e in data.training.valid}
    assert len(held) == 2 and len(data.training.queries) == 18
    # like a history's validation item, a held-out claim's document is as unseen to the index as a test claim's
    assert [data.catalog.popularity[int(i)] for i in sorted(held)] == [0, 0]
    assert data.catalog.popularity.sum() == 18


def test_beir_without_test_split_scores_training_pairs(tmp_path):
    d = write_beir(tmp_path / "beir", ["doc a", "doc b"], {"q1": ("first", "0")})
    (d / "qrels" / "test.tsv").unlink()
    data = load_eval_data(d)
    assert data.test_source.endswith("train.tsv") and not data.held_out


@pytest.mark.parametrize(
    "lines, message",
    [
        ('{"history": [0], "target": 99}\n', "'99' is not in the catalog"),
        ('{"history": [77], "target": 1}\n', "'77' is not in the catalog"),
        ('{"_id": "q", "text": "t"}\n', "needs --test-qrels"),
        ("not json\n", "not valid JSON"),
        ("", "no test cases"),
    ],
)
def test_bad_test_files(histories, tmp_path, lines, message):
    (tmp_path / "t.jsonl").write_text(lines)
    with pytest.raises(DataError, match=message):
        load_eval_data(histories, test=tmp_path / "t.jsonl")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/nonexistent"], "data folder not found"),
        (["--methods", "rq-kmeans,tiger"], "unknown method 'tiger'"),
        (["--baselines", "bm42"], "unknown baseline 'bm42'"),
        (["--k", "10,ten"], "comma-separated ints"),
        (["--k", "0,10"], "cut-offs K must be positive"),
        (["--methods", "rq-kmeans", "--budgets", "1.0"], "--budgets applies to sarq and sa2crq"),
        (["--test-qrels", "x.tsv"], "--test-qrels needs --test"),
        (["--test", "/nonexistent.jsonl"], "file not found"),
        (["--base-model", "/nonexistent"], "/nonexistent has no config.json"),
        (["--min-length", "0"], "--min-length"),
        (["--length-penalty", "-1"], "--length-penalty"),
        (["--item-weight", "-1"], "--item-weight"),
        (["--item-weights", "0,x"], "--item-weights"),
        (["--beams-per-item", "0"], "--beams-per-item"),
        (["--head-proposals", "-1"], "--head-proposals"),
        (["--collab-views", "together,next"], "--collab-views"),
    ],
)
def test_cli_bad_input_exits_2(sa2crq, histories, tmp_path, args, message):
    base = {"--data": str(histories), "--out": str(tmp_path / "out")}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    code, _, err = sa2crq("eval", *[x for kv in base.items() for x in kv])
    assert code == 2, err
    assert message in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_cli_end_to_end_on_text_queries(sa2crq, tmp_path):
    """Text queries through the decoder; BM25 runs; dense is skipped next to foreign vectors."""
    synth = generate(SyntheticConfig(num_items=300, dim=16, seed=3))
    paths = write(synth, tmp_path / "synth")
    docs = synth.catalog.texts
    rng = np.random.default_rng(0)
    picks = rng.choice(len(docs), 40, replace=False)
    # a query is the product name without brand and colour: "Compact Skillet 123"
    queries = {f"q{i}": (" ".join(docs[i].split(" - ")[0].split()[1:]), str(i)) for i in picks}
    d = write_beir(tmp_path / "beir", docs, queries)
    out = tmp_path / "out"
    args = ["eval", "--data", str(d), "--vectors", str(paths["vectors"]), "--methods", "rq-kmeans", "--baselines", "popularity,bm25,dense",
            "--k", "1,10", "--out", str(out), "--codebook-sizes", "4,8,8", "--epochs", "2", "--decoder-epochs", "1", "--max-steps", "3", "--val-cases", "10",
            "--hallucination-cases", "5", "--quiet"]
    code, stdout, err = sa2crq(*args)
    assert code == 0, err
    assert stdout.strip() == str(out / "report.json")
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["cases"] == 40 and report["data"]["held_out"]
    assert report["baselines"]["dense"]["skipped"].startswith("the catalog has its own vectors")
    # "Compact Skillet 123" names its item almost uniquely: BM25 finds most of them first
    assert report["baselines"]["bm25"]["recall"]["1"]["overall"] > 0.7
    assert 0 <= report["methods"]["rq-kmeans"]["recall"]["10"]["overall"] <= 1
    assert report["methods"]["rq-kmeans"]["hallucination_detail"]["cases"] == 5
    assert "| rq-kmeans |" in (out / "report.md").read_text()


def test_split_queries_holds_out_a_share_of_the_training_queries(sa2crq, tmp_path):
    docs = [f"document number {i}" for i in range(30)]
    src = write_beir(tmp_path / "beir", docs, {f"q{i}": (f"query {i}", str(i)) for i in range(20)})
    (src / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{i}\t1\n" for i in range(20)))
    code, stdout, err = sa2crq("data", "split-queries", "--data", str(src), "--out", str(tmp_path / "split"), "--heldout", "0.25")
    assert code == 0, err
    assert stdout.strip() == str(tmp_path / "split")
    qrels = {name: {line.split("\t")[0] for line in (tmp_path / "split" / "qrels" / f"{name}.tsv").read_text().splitlines()[1:]}
             for name in ("train", "test")}
    assert len(qrels["test"]) == 5 and len(qrels["train"]) == 15 and not qrels["test"] & qrels["train"]
    data = load_eval_data(tmp_path / "split")
    assert len(data.cases) == 5 and {c.query for c in data.cases} == {f"query {q[1:]}" for q in qrels["test"]}
    code, _, err = sa2crq("data", "split-queries", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert code == 2 and "expected a BEIR folder" in err


def test_drop_last_tests_on_the_validation_items(sa2crq, tmp_path):
    src = tmp_path / "hist"
    src.mkdir()
    (src / "items.jsonl").write_text("".join(json.dumps({"item_id": i, "title": f"item {i}"}) + "\n" for i in range(10)))
    (src / "sequences.jsonl").write_text(json.dumps({"user_id": 0, "item_ids": [1, 2, 3, 4, 5]}) + "\n"
                                         + json.dumps({"user_id": 1, "item_ids": [6, 7, 8, 9]}) + "\n")
    code, stdout, err = sa2crq("data", "drop-last", "--data", str(src), "--out", str(tmp_path / "shifted"))
    assert code == 0, err
    assert stdout.strip() == str(tmp_path / "shifted")
    original, shifted = load_eval_data(src), load_eval_data(tmp_path / "shifted")
    # the shifted folder's test cases are the original's validation examples
    assert [(c.history, c.relevant) for c in shifted.cases] == [(e.history, frozenset({e.target})) for e in original.training.valid]
    (src / "sequences.jsonl").write_text(json.dumps({"user_id": 0, "items": [1, 2, 3]}) + "\n")
    code, _, err = sa2crq("data", "drop-last", "--data", str(src), "--out", str(tmp_path / "bad"))
    assert code == 2 and "line 1: no item_ids list" in err
    code, _, err = sa2crq("data", "drop-last", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert code == 2 and "expected a history folder" in err
