"""Shared fixtures: a disposable real Redis per session and a small index built once per session."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from indexer.build import BuildConfig, build_index
from indexer.data.catalog import Catalog
from indexer.data.synthetic import SyntheticConfig, generate
from indexer.quantizers import QuantizerConfig
from model_store import Store
from sidcore.index.artifact import IndexArtifact, load_index
from sidcore.index.embedded import ENV_URL, EmbeddedRedis
from sidcore.index.redis_index import RedisIndex


@pytest.fixture(autouse=True)
def _no_ambient_redis(monkeypatch):
    # Tests name their Redis explicitly; a developer's SA2CRQ_REDIS_URL must not leak in.
    monkeypatch.delenv(ENV_URL, raising=False)


@pytest.fixture(scope="session")
def redis_server():
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def index(redis_client) -> RedisIndex:
    return RedisIndex(redis_client)


@pytest.fixture(scope="session")
def synthetic():
    return generate(SyntheticConfig(num_items=2000, dim=16, seed=0))


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, synthetic) -> Store:
    """A store with one SARQ index version (variable-length SIDs of 2 and 3 codes)."""
    store = Store(tmp_path_factory.mktemp("store"))
    cfg = BuildConfig(method="sarq", quantizer=QuantizerConfig(sizes=(16, 32, 64), epochs=3))
    version, _ = build_index(synthetic.catalog, cfg, store, progress=False)
    store.activate("index", version)
    return store


@pytest.fixture(scope="session")
def artifact(small_store) -> IndexArtifact:
    return load_index(small_store)


@pytest.fixture
def renamed(artifact):
    """The same artifact under another version id: cheap extra versions for gc and failure tests."""

    def make(suffix: str) -> IndexArtifact:
        return dataclasses.replace(artifact, version=f"{artifact.version}-{suffix}")

    return make


@pytest.fixture
def new_items(artifact, synthetic):
    """Cold-start items: ``copy_of`` items reuse existing items' vectors (so they join those SIDs)."""

    def make(n: int, copy_of: tuple[int, ...] = (), prefix: str = "new") -> Catalog:
        rng = np.random.default_rng(n)
        vectors = rng.normal(size=(n, synthetic.catalog.vectors.shape[1])).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for j, i in enumerate(copy_of):
            vectors[j] = synthetic.catalog.vectors[i]
        ids = [f"{prefix}-{j}" for j in range(n)]
        return Catalog(ids, [f"new item {j}" for j in range(n)], np.arange(n, 0, -1, dtype=np.float64), vectors)

    return make


@pytest.fixture
def items_file(tmp_path):
    """Writes a catalog as the CLI reads it: items JSONL plus a vectors .npy beside it."""

    def write(catalog: Catalog, name: str = "new_items") -> tuple[Path, Path]:
        path = tmp_path / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for item, text, pop in zip(catalog.item_ids, catalog.texts, catalog.popularity):
                f.write(json.dumps({"item_id": item, "title": text, "popularity": float(pop)}) + "\n")
        np.save(tmp_path / f"{name}.npy", catalog.vectors)
        return path, tmp_path / f"{name}.npy"

    return write


@pytest.fixture(scope="session")
def tiny_stack(tmp_path_factory):
    """A tiny decoder trained briefly on a SARQ index whose trie a beam can cover whole.

    Small codebooks with SARQ give variable-length SIDs; items carry the synthetic attributes
    (category, brand, price, available) and a title payload. Returns a namespace: store, data_dir
    (items.jsonl + sequences.jsonl), decoder, trie, mask, art (the index artifact), catalog, snapshot
    (the trie with the attributes, as a replica holds it).
    """
    from types import SimpleNamespace

    from indexer.build import BuildConfig, build_index
    from indexer.data.catalog import count_popularity, load_items
    from indexer.data.synthetic import ATTRIBUTES, write
    from indexer.quantizers import QuantizerConfig
    from indexer.training.config import TrainConfig
    from indexer.training.trainer import train_decoder
    from sidcore.decoder.bundle import load_decoder
    from sidcore.decoder.model import TinyConfig
    from sidcore.decoder.vocab import SIDVocab
    from sidcore.index import Trie, TrieMask
    from sidcore.index.artifact import load_index
    from sidcore.index.snapshot import IndexSnapshot

    d = tmp_path_factory.mktemp("tiny_decoder")
    synth = generate(SyntheticConfig(num_items=400, dim=16, seed=2))
    paths = write(synth, d / "data", num_users=150, seed=2)
    cat = load_items(paths["items"], ATTRIBUTES, ("title",)).with_vectors(synth.catalog.vectors)
    cat = cat.with_popularity(count_popularity(cat, paths["sequences"]))
    store = Store(d / "store")
    cfg = BuildConfig(method="sarq", quantizer=QuantizerConfig(sizes=(4, 4, 6), epochs=3, latent_dim=8, hidden=(32,)))
    version, _ = build_index(cat, cfg, store, progress=False)
    store.activate("index", version)
    tiny = TinyConfig(hidden_size=64, layers=2, heads=2, kv_heads=1, head_dim=32, intermediate_size=128)
    # SID scores alone (item weight 0), so that the order tests read the decoded SIDs; the item
    # head's re-ranking is tested with an explicit weight (tests/test_retriever.py).
    cfg = TrainConfig(epochs=3, batch_tokens=1024, val_cases=40, tiny=tiny, text_vocab=300, item_weights=(0.0,))
    decoder_version, _ = train_decoder(store, d / "data", cfg, progress=False)
    store.activate("decoder", decoder_version)
    decoder = load_decoder(store)
    art = load_index(store, decoder.spec.index_version)
    trie = Trie.from_artifact(art)
    mask = TrieMask(trie, SIDVocab(art.sizes, decoder.spec.base))
    table = art.table()
    snapshot = IndexSnapshot(trie, art.attributes.take(table.order), art.fields)
    return SimpleNamespace(store=store, data_dir=d / "data", decoder=decoder, trie=trie, mask=mask, art=art, catalog=cat, snapshot=snapshot)


def tiny_pair(tiny_stack, directory: Path, sizes: tuple[int, ...], seed: int):
    """Another index of ``tiny_stack``'s catalog (quantizer ``sizes`` and ``seed``) and a tiny decoder
    trained for it, in a store of its own: a retrained release. Returns (store, artifact, decoder)."""
    from indexer.training.config import TrainConfig
    from indexer.training.trainer import train_decoder
    from sidcore.decoder.bundle import load_decoder
    from sidcore.decoder.model import TinyConfig

    store = Store(directory)
    cfg = BuildConfig(method="sarq", quantizer=QuantizerConfig(sizes=sizes, epochs=3, latent_dim=8, hidden=(32,), seed=seed))
    version, _ = build_index(tiny_stack.catalog, cfg, store, progress=False)
    store.activate("index", version)
    tiny = TinyConfig(hidden_size=64, layers=2, heads=2, kv_heads=1, head_dim=32, intermediate_size=128)
    decoder_version, _ = train_decoder(store, tiny_stack.data_dir, TrainConfig(epochs=3, batch_tokens=1024, val_cases=40, tiny=tiny, text_vocab=300, seed=seed,
                                                                                  item_weights=(0.0,)),
                                       progress=False)
    store.activate("decoder", decoder_version)
    return store, load_index(store, version), load_decoder(store)


@pytest.fixture(scope="session")
def retrained_pair(tiny_stack, tmp_path_factory):
    """The tiny catalog re-indexed with another quantizer seed (same sizes, other SIDs) and its own decoder."""
    return tiny_pair(tiny_stack, tmp_path_factory.mktemp("retrained"), tiny_stack.art.sizes, seed=7)


@pytest.fixture(scope="session")
def resized_pair(tiny_stack, tmp_path_factory):
    """The tiny catalog re-indexed with other codebook sizes and its own decoder."""
    return tiny_pair(tiny_stack, tmp_path_factory.mktemp("resized"), (4, 6, 8), seed=3)


@pytest.fixture(scope="session")
def tiny_decoder(tiny_stack):
    """(decoder, trie, mask, artifact) of ``tiny_stack``."""
    return tiny_stack.decoder, tiny_stack.trie, tiny_stack.mask, tiny_stack.art


ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def start_service(tiny_stack):
    """Starts the real service (uvicorn on a free port) on the tiny decoder, with its own embedded Redis.

    ``start_service(**settings)`` returns a namespace: url, runtime, redis (the EmbeddedRedis, which a
    test may stop and restart), redis_url, store, data_dir, admin_token. Everything stops at the end
    of the session.
    """
    from types import SimpleNamespace

    from sa2crq.wiring import background_server
    from service.settings import Settings

    running = []

    def start(**overrides) -> SimpleNamespace:
        redis_server = EmbeddedRedis().start()
        with redis_server.client() as client:
            RedisIndex(client).publish_release(tiny_stack.store, name="tiny", activate=True, progress=False)
        defaults = dict(store=tiny_stack.store.root, redis_url=redis_server.url, port=0, admin_token=ADMIN_TOKEN, max_beam_width=32)
        settings = Settings(_env_file=None, **{**defaults, **overrides})
        server = background_server(settings).start()
        running.append((server, redis_server))
        return SimpleNamespace(url=server.url, runtime=server.runtime, redis=redis_server, redis_url=redis_server.url,
                               store=tiny_stack.store, data_dir=tiny_stack.data_dir, admin_token=ADMIN_TOKEN, server=server)

    yield start
    for server, redis_server in running:
        server.stop()
        redis_server.close()


@pytest.fixture(scope="session")
def live_service(start_service):
    """One shared service with default settings; tests that stop its Redis or flip its index start their own."""
    return start_service()
