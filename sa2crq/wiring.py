"""Joins the wings where the service needs the indexer: cold start (POST /items) encodes new items
with the index's frozen quantizer, which lives in the indexer."""

from __future__ import annotations

import numpy as np

from indexer.coldstart import add_items
from indexer.data.catalog import Catalog
from service.server import BackgroundServer
from service.settings import Settings
from sidcore.index.redis_index import InsertResult, RedisIndex


def insert_items(index: RedisIndex, items: list) -> InsertResult:
    """``service.runtime.InsertItems`` over ``indexer.coldstart.add_items``; ``items`` as posted
    (``service.schemas.NewItem``: item_id, title, popularity, optional vector)."""
    vectors = np.array([i.vector for i in items], dtype=np.float32) if items[0].vector is not None else None
    catalog = Catalog([i.item_id for i in items], [i.title for i in items], np.array([i.popularity for i in items], dtype=np.float64))
    return add_items(index, catalog, vectors, progress=False)


def background_server(settings: Settings) -> BackgroundServer:
    """The full service (cold start included) on a background thread: the demo's, the tests'."""
    return BackgroundServer(settings, insert_items=insert_items)
