"""Versioned, checksummed artifact store shared by the indexer, the decoder trainer and the service."""

from model_store.store import MANIFEST, Manifest, Store, StoreError, Version, atomic_write

__all__ = ["MANIFEST", "Manifest", "Store", "StoreError", "Version", "atomic_write"]
