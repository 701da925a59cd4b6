"""The build pipeline and the `sa2crq index` CLI: reports, determinism, exit 2 on bad input."""

import json
import sys

import numpy as np
import pytest

from indexer.build import BuildConfig, build_index
from indexer.data.synthetic import SyntheticConfig, generate, write
from indexer.quantizers import QuantizerConfig
from model_store import Store
from sa2crq.cli import main
from sidcore.errors import DataError
from sidcore.index.artifact import load_index

QCFG = QuantizerConfig(sizes=(8, 16, 32), epochs=4, batch_size=256, latent_dim=8, hidden=(32,))


@pytest.fixture(scope="module")
def synth():
    return generate(SyntheticConfig(num_items=1500, dim=16, seed=1))


@pytest.fixture(scope="module")
def files(synth, tmp_path_factory):
    return write(synth, tmp_path_factory.mktemp("data"), num_users=400, seed=1)


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["sa2crq", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_sa2crq_build_report_and_lengths(tmp_path, synth):
    store = Store(tmp_path)
    version, report = build_index(synth.catalog, BuildConfig(method="sa2crq", quantizer=QCFG), store, progress=False)
    for key in ("num_items", "num_sids", "mean_sid_length", "items_per_sid", "collision_rate", "layers", "reconstruction_mse"):
        assert key in report
    assert set(report["items_per_sid"]) >= {"p80", "p90", "p99", "p999", "mean", "max"}
    assert [layer["size"] for layer in report["layers"]] == [10, 20, 40]
    assert report["mean_sid_length"]["tail"] < report["mean_sid_length"]["head"]
    art = load_index(store, version)
    assert art.version == version and len(art.item_ids) == 1500
    assert report["num_sids"] == art.table().num_sids
    assert report["items_per_sid"]["mean"] == pytest.approx(1500 / report["num_sids"])
    for png in ("items_per_sid.png", "sid_length.png", "layer_tokens.png"):
        assert (art.path / png).stat().st_size > 1000


def test_build_is_deterministic(tmp_path, synth):
    cfg = BuildConfig(method="sarq", quantizer=QCFG)
    a = load_index(Store(tmp_path / "a"), build_index(synth.catalog, cfg, Store(tmp_path / "a"), progress=False)[0])
    b = load_index(Store(tmp_path / "b"), build_index(synth.catalog, cfg, Store(tmp_path / "b"), progress=False)[0])
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.lengths, b.lengths)


def test_dedup_suffix_makes_fixed_length_sids_unique(tmp_path, synth):
    version, report = build_index(synth.catalog, BuildConfig(method="rq-kmeans", quantizer=QCFG, dedup=True), Store(tmp_path), progress=False)
    assert report["num_sids"] == 1500 and report["collision_rate"] == 0.0
    assert report["mean_sid_length"]["overall"] == 4.0
    with pytest.raises(DataError, match="fixed-length"):
        BuildConfig(method="sa2crq", dedup=True)


def test_cli_build_and_report(monkeypatch, capsys, tmp_path, files):
    store = tmp_path / "store"
    code, out, _ = run_cli(
        monkeypatch, capsys, "index", "build", "--items", files["items"], "--interactions", files["sequences"],
        "--vectors", files["vectors"], "--method", "rq-kmeans", "--codebook-sizes", "8,16,32", "--store", store, "--quiet",
    )
    assert code == 0
    version = out.strip().splitlines()[-1]
    assert (store / version / "manifest.json").exists()
    code, out, _ = run_cli(monkeypatch, capsys, "index", "report", "--store", store, "--json")
    assert code == 0
    assert json.loads(out)["num_items"] == 1500


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("missing-file", ["--items", "nope.jsonl"], "file not found"),
        ("missing-field", ["--items", "{no_id}"], "missing field 'item_id'"),
        ("empty", ["--items", "{empty}"], "catalog is empty"),
        ("nan-vectors", ["--items", "{items}", "--vectors", "{nan}"], "NaN or inf"),
        ("acrq-sizes", ["--items", "{items}", "--method", "acrq", "--codebook-sizes", "32,16,64"], "strictly increasing"),
        ("bad-sizes", ["--items", "{items}", "--codebook-sizes", "a,b"], "comma-separated integers"),
        ("bad-interactions", ["--items", "{items}", "--interactions", "{no_id}"], "item_ids"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(monkeypatch, capsys, tmp_path, files, case, extra, message):
    (tmp_path / "no_id.jsonl").write_text('{"title": "x"}\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    vec = np.load(files["vectors"])
    vec[5, 0] = np.nan
    np.save(tmp_path / "nan.npy", vec)
    paths = {"no_id": tmp_path / "no_id.jsonl", "empty": tmp_path / "empty.jsonl", "items": files["items"], "nan": tmp_path / "nan.npy"}
    args = [a.format(**paths) for a in extra]
    store = tmp_path / "store"
    code, _, err = run_cli(monkeypatch, capsys, "index", "build", *args, "--store", store, "--quiet")
    assert code == 2
    assert message in err
    assert not store.exists()


def test_cli_report_without_index_exits_2(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "index", "report", "--store", tmp_path / "empty")
    assert code == 2 and "no index version" in err


def test_cli_max_group_bounds_the_shortened_sids(monkeypatch, capsys, tmp_path, files):
    store = tmp_path / "store"
    code, out, _ = run_cli(
        monkeypatch, capsys, "index", "build", "--items", files["items"], "--interactions", files["sequences"], "--vectors", files["vectors"],
        "--method", "sa2crq-kmeans", "--codebook-sizes", "8,16,32", "--max-group", "2", "--store", store, "--quiet",
    )
    assert code == 0
    art = load_index(Store(store), out.strip().splitlines()[-1])
    assert art.config["sarq"]["max_group"] == 2
    short = art.lengths < art.codes.shape[1]
    assert short.any()
    _, per_sid = np.unique([tuple(c[:n]) for c, n in zip(art.codes[short], art.lengths[short])], axis=0, return_counts=True)
    assert per_sid.max() <= 2
    code, _, err = run_cli(monkeypatch, capsys, "index", "build", "--items", files["items"], "--max-group", "0", "--store", store, "--quiet")
    assert code == 2 and "--max-group" in err


def test_cli_decoder_train_refuses_a_base_model_folder_without_a_checkpoint(monkeypatch, capsys, tmp_path, files):
    code, _, err = run_cli(monkeypatch, capsys, "decoder", "train", "--store", tmp_path / "store", "--data", tmp_path,
                           "--base-model", tmp_path, "--quiet")
    assert code == 2 and "--base-model" in err and "has no config.json" in err
    assert not (tmp_path / "store").exists()


def test_cli_collab_views_reach_the_index_and_bad_ones_exit_2(monkeypatch, capsys, tmp_path, files):
    store = tmp_path / "store"
    base = ["index", "build", "--items", files["items"], "--interactions", files["sequences"], "--vectors", files["vectors"],
            "--method", "rq-kmeans", "--codebook-sizes", "8,16,32", "--store", store, "--quiet"]
    code, out, _ = run_cli(monkeypatch, capsys, *base, "--collab-views", "together,after")
    assert code == 0
    art = load_index(Store(store), out.strip().splitlines()[-1])
    assert art.config["collab_views"] == ["together", "after"] and art.config["collab"]["dim"] == 128
    for bad in ("next", "after,after", ""):
        code, _, err = run_cli(monkeypatch, capsys, *base, "--collab-views", bad)
        assert code == 2 and "--collab-views" in err
