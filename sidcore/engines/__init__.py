"""Engines behind one interface (``base.Engine``): prompts in, ranked SIDs out, under a trie mask.
``beam`` is the search every engine drives; ``torch_engine`` runs it on transformers' Qwen3 (the
service's vLLM engine drives the same search, see ``service/engines``)."""
