"""Run every method and baseline on one EvalData and collect their results.

Each generative run (a method, or a SARQ method at one budget) gets ``OUT/methods/NAME/``: a
``fingerprint.json`` (everything its result depends on), an artifact ``store/`` with its index and
decoder, ``ranked.jsonl`` (per case: the items and SIDs returned) and ``result.json``, written
last. A re-run with the same fingerprint reuses ``result.json`` (or a finished index / decoder in
the store); a different fingerprint redoes the run, keeping its index when only the decoder or
evaluation settings changed. Baselines work the same way under
``OUT/baselines/NAME/``.

Decoding goes through ``sidcore.retriever.Retriever`` with the torch engine, the pipeline the
service runs, so a method's numbers are what the service would return for the same requests
(history items left out by default, as the service does: ``EvalConfig.exclude_history``, which
the baselines follow too). All cut-offs K come from one request per case with
``k = max(K)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from indexer.build import BuildConfig, build_index
from indexer.evaluation.baselines import BASELINES
from indexer.evaluation.cases import EvalData
from indexer.evaluation.config import EvalConfig
from indexer.evaluation.metrics import coverage, hallucination_rate, ret_per, score
from indexer.evaluation.report import build_report
from indexer.training.examples import extend_sequences
from indexer.training.trainer import train_decoder
from indexer.training.validation import sample_cases as pick_cases
from model_store import Store, atomic_write
from sidcore.decoder.bundle import load_decoder
from sidcore.engines.torch_engine import TorchEngine
from sidcore.index.artifact import load_index
from sidcore.index.mask import TrieMask
from sidcore.index.trie import Trie
from sidcore.retriever import FUSED_BEAMS_PER_ITEM, HEAD_PROPOSALS_PER_ITEM, Query, Retriever
from sidcore.sid import format_sid


def _jsonable(obj):
    return json.loads(json.dumps(obj))


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2))


def cases_digest(data: EvalData) -> str:
    h = hashlib.sha256()
    for c in data.cases:
        h.update(json.dumps([c.query, list(c.history), sorted(c.relevant)]).encode())
    return h.hexdigest()[:16]


def sample_cases(data: EvalData, max_cases: int | None, seed: int) -> EvalData:
    """A seeded sample of the cases, in their original order (the same for every method)."""
    if max_cases is None or max_cases >= len(data.cases):
        return data
    keep = np.sort(np.random.default_rng(seed).permutation(len(data.cases))[:max_cases])
    return dataclasses.replace(data, cases=[data.cases[i] for i in keep])


class _RunDir:
    """A run's folder, reset when its fingerprint changes; ``result.json`` marks it finished.

    A fingerprint's ``index`` part names what the run's index depends on, its ``train`` part what
    the decoder depends on: when only the rest changed (cut-offs, cases, exclusions), the index and
    the decoder in ``store/`` are kept and the results redone; when the training changed too, the
    decoder is retrained on the kept index.
    """

    def __init__(self, path: Path, fingerprint: dict):
        self.path = path
        self.fingerprint = _jsonable(fingerprint)
        fp = path / "fingerprint.json"
        old = json.loads(fp.read_text()) if fp.is_file() else None
        if old != self.fingerprint:
            if old is not None and "index" in old and old["index"] == self.fingerprint.get("index"):
                # Keep what did not change: the index, and the decoder too when its training did not.
                redo = ["result.json", "ranked.jsonl"]
                if old.get("train") != self.fingerprint.get("train"):
                    redo.append("store/active/decoder")
                for name in redo:
                    (path / name).unlink(missing_ok=True)
            elif path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True, exist_ok=True)
            write_json(fp, self.fingerprint)

    def finished(self) -> dict | None:
        p = self.path / "result.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def finish(self, result: dict) -> dict:
        write_json(self.path / "result.json", result)
        return result


def _scores(data: EvalData, rankings: list[list[str]], ks) -> dict:
    out = score(rankings, [c.relevant for c in data.cases], data.case_head(), ks).summary()
    out["coverage"] = coverage(rankings, ks)
    out["ret_per"] = ret_per(rankings)
    return out


def open_retriever(store: Store, beam_width: int, max_k: int, length_penalty: float | None, item_weight: float | None = None,
                   fused_beams_per_item: int = FUSED_BEAMS_PER_ITEM, head_proposals_per_item: int = HEAD_PROPOSALS_PER_ITEM,
                   item_prior: float | None = None):
    """The service's pipeline on the store's active decoder and its index: (Retriever, Trie).
    ``length_penalty``, ``item_weight``, ``item_prior``: None scores as the decoder chose on its validation cases."""
    decoder = load_decoder(store)
    trie = Trie.from_artifact(load_index(store, decoder.spec.index_version))
    engine = TorchEngine(decoder, TrieMask(trie, decoder.spec.vocab), length_penalty=length_penalty)
    widest = max(beam_width, fused_beams_per_item * max_k)  # what a request the item head re-ranks asks for
    return Retriever(decoder, engine, beam_width=beam_width, max_beam_width=widest, item_weight=item_weight,
                     fused_beams_per_item=fused_beams_per_item, head_proposals_per_item=head_proposals_per_item, item_prior=item_prior), trie


def evaluate_decoder(store: Store, data: EvalData, cfg: EvalConfig, progress: bool = True) -> tuple[dict, list[dict]]:
    """Score the store's active decoder on its index through the service's Retriever.

    Returns (metrics, per-case records of the items and SIDs returned).
    """
    retriever, trie = open_retriever(store, cfg.beam_width, cfg.max_k, cfg.length_penalty, cfg.item_weight, cfg.fused_beams_per_item,
                                     cfg.head_proposals_per_item, cfg.item_prior)
    records: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(data.cases), desc="decode", unit="case", disable=not progress)
    for i in range(0, len(data.cases), cfg.batch_size):
        chunk = data.cases[i : i + cfg.batch_size]
        results, _ = retriever.retrieve(trie, [Query(c.query, c.history, k=cfg.max_k, exclude_history=cfg.exclude_history) for c in chunk])
        for r in results:
            records.append({
                "items": [h.item_id for h in r.items],
                "scores": [round(h.score, 6) for h in r.items],
                "sids": [format_sid(h.sid) for h in r.sids],
            })
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - t0

    hcases = data.cases[: cfg.hallucination_cases]
    valid: list[list[bool]] = []
    for i in range(0, len(hcases), cfg.batch_size):
        chunk = hcases[i : i + cfg.batch_size]
        results, _ = retriever.retrieve(trie, [Query(c.query, c.history, k=cfg.hallucination_k) for c in chunk], constrained=False)
        valid += [[h.node >= 0 for h in r.sids] for r in results]

    metrics = _scores(data, [r["items"] for r in records], cfg.ks)
    metrics["hallucination"] = hallucination_rate(valid)
    metrics["hallucination_detail"] = {"cases": len(valid), "sids_per_case": cfg.hallucination_k, "constrained": False}
    metrics["decode_ms_per_case"] = 1e3 * seconds / max(len(data.cases), 1)
    metrics["length_penalty"] = retriever.engine.length_penalty
    metrics["item_weight"] = retriever.item_weight
    metrics["item_prior"] = retriever.item_prior
    metrics["fused_beams_per_item"] = retriever.fused_beams_per_item
    metrics["head_proposals_per_item"] = retriever.head_proposals_per_item
    return metrics, records


def run_method(name: str, build: BuildConfig, data: EvalData, cfg: EvalConfig, out: Path,
               cache_dir: Path | None = None, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    if not data.train_sequences:
        build = dataclasses.replace(build, collab_weight=0.0)  # no histories, nothing collaborative to add
    fingerprint = {
        "index": {"build": build.as_dict(), "data": str(data.data_dir.resolve()), "vectors": data.catalog.vectors is not None},
        # the item weight is chosen on validation cases scored with the served proposals (``Validation``):
        # a decoder chosen under another default is retrained, not reused
        "train": dataclasses.asdict(cfg.train) | {"validation_head_proposals": HEAD_PROPOSALS_PER_ITEM},
        "base_model": cfg.as_dict()["base_model"],
        "ks": cfg.ks, "beam_width": cfg.beam_width, "length_penalty": cfg.length_penalty, "item_weight": cfg.item_weight, "item_prior": cfg.item_prior,
        "exclude_history": cfg.exclude_history,
        "fused_beams_per_item": cfg.fused_beams_per_item, "head_proposals_per_item": cfg.head_proposals_per_item,
        "hallucination": [cfg.hallucination_cases, cfg.hallucination_k], "cases": cases_digest(data),
    }
    run = _RunDir(out / "methods" / name, fingerprint)
    if (done := run.finished()) is not None:
        log(f"{name}: finished earlier, reusing {run.path / 'result.json'}")
        return done
    store = Store(run.path / "store")
    timing = {}
    if store.active("index") is None:
        log(f"{name}: building the index")
        t = time.perf_counter()
        version, _ = build_index(data.catalog, build, store, cache_dir=cache_dir, progress=progress, sequences=data.train_sequences)
        store.activate("index", version)
        timing["build_s"] = time.perf_counter() - t
    if store.active("decoder") is None:
        log(f"{name}: training the decoder (up to {cfg.train.epochs} epochs)")
        t = time.perf_counter()
        version, _ = train_decoder(store, data.data_dir, cfg.train, index_version=store.active("index"), base_model=cfg.base_model,
                                   data=data.training, progress=progress, cache_dir=cache_dir, log=log)
        store.activate("decoder", version)
        timing["train_s"] = time.perf_counter() - t
    log(f"{name}: decoding {len(data.cases)} cases")
    t = time.perf_counter()
    metrics, records = evaluate_decoder(store, data, cfg, progress)
    timing["eval_s"] = time.perf_counter() - t
    with open(run.path / "ranked.jsonl", "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")

    art = load_index(store, store.active("index"))
    decoder_manifest = store.open(store.active("decoder"), kind="decoder").manifest
    return run.finish({
        **metrics,
        "method": build.method,
        "budget": build.sarq.budget,
        "sid_length": art.report["mean_sid_length"],
        "quality": art.report,
        "index_version": art.version,
        "decoder_version": decoder_manifest.version,
        "decoder_summary": decoder_manifest.config.get("summary", {}),
        "store": str(store.root),
        "timing_s": timing,
    })


def run_baseline(name: str, data: EvalData, cfg: EvalConfig, out: Path,
                 cache_dir: Path | None = None, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    baseline = BASELINES[name](seed=cfg.seed, cache_dir=cache_dir, progress=progress, sasrec=cfg.sasrec, rules=cfg.rules,
                               exclude_history=cfg.exclude_history)
    fingerprint = {"baseline": name, "config": baseline.config(), "ks": cfg.ks, "seed": cfg.seed, "cases": cases_digest(data),
                   "data": str(data.data_dir.resolve()), "vectors": data.catalog.vectors is not None, "exclude_history": cfg.exclude_history,
                   "train_valid": cfg.train.train_valid}
    run = _RunDir(out / "baselines" / name, fingerprint)
    if (done := run.finished()) is not None:
        log(f"{name}: finished earlier, reusing {run.path / 'result.json'}")
        return done
    if (reason := baseline.skip_reason(data)) is not None:
        log(f"{name}: skipped ({reason})")
        return run.finish({"skipped": reason})
    log(f"{name}: ranking {len(data.cases)} cases")
    t = time.perf_counter()
    rankings = baseline.rank(data, cfg.max_k)
    seconds = time.perf_counter() - t
    with open(run.path / "ranked.jsonl", "w", encoding="utf-8") as f:
        for r in rankings:
            f.write(json.dumps({"items": r}) + "\n")
    return run.finish({**_scores(data, rankings, cfg.ks), "hallucination": None, "config": baseline.config(), "fitted": baseline.fitted,
                       "timing_s": {"total_s": seconds}})


def with_validation_items(data: EvalData, cfg: EvalConfig) -> EvalData:
    """With ``cfg.train.train_valid``, ``data`` whose training sequences go on to the validation
    item of every user that neither the decoder nor a baseline validates on, so the index's
    collaborative vectors, the rules and SASRec learn from what the decoder learns from."""
    if not cfg.train.train_valid or not data.train_sequences:
        return data
    valid = data.training.valid
    # every baseline's sample, listed or not, so what a method trains on does not hang on the baselines run beside it
    n = max(cfg.rules.val_cases, cfg.sasrec.val_cases)
    scored = set(pick_cases(valid, cfg.train.val_cases, cfg.train.seed)) | set(pick_cases([e for e in valid if e.history], n, cfg.seed))
    extended = extend_sequences([tuple(s) for s in data.train_sequences], [e for e in valid if e not in scored and not e.query])
    return dataclasses.replace(data, train_sequences=[list(s) for s in extended])


def run_all(data: EvalData, cfg: EvalConfig, out: Path, cache_dir: Path | None = None, progress: bool = True,
            log: Callable[[str], None] = print) -> dict:
    """Every run of ``cfg`` on a sample of ``data``'s cases; returns the report dict (see report.py)."""
    out.mkdir(parents=True, exist_ok=True)
    data = with_validation_items(sample_cases(data, cfg.max_cases, cfg.seed), cfg)
    methods = {name: run_method(name, b, data, cfg, out, cache_dir, progress, log) for name, b in cfg.runs()}
    baselines = {name: run_baseline(name, data, cfg, out, cache_dir, progress, log) for name in cfg.baselines}
    return build_report(data, cfg, methods, baselines, out)
