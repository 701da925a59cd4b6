"""The online wing: the FastAPI service over the shared core.

``app`` (middleware, routers), ``routers/`` (one per concern), ``errors`` (error type → status),
``runtime`` (what a running service holds), ``batching`` (micro-batches behind a bounded queue),
``sync`` (the in-memory trie following Redis), ``engines/`` (the vLLM engine; the torch engine is
in ``sidcore.engines``), ``schemas``, ``settings``, ``metrics``, ``server`` (uvicorn).
"""
