"""Engines behind one interface (``base.Engine``): prompts in, ranked SIDs out, under a trie mask.
``beam`` is the search every engine drives; ``torch_engine`` runs it on transformers' Qwen3 (the
service's vLLM engine drives the same search, see ``service/engines``)."""

# Plain sums (0). SARQ gives dense regions longer SIDs and each code adds a log-probability below
# 0, so a positive penalty lifts long SIDs: 1 was ahead on scifact's selection claims and behind
# on games' validation users (docs/evaluation.md, stop 45), so it is a setting, not the default.
LENGTH_PENALTY = 0.0
