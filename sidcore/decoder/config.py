"""Shape of the default CPU decoder (kept apart from ``model.py`` so configs load without torch)."""

from __future__ import annotations

from dataclasses import dataclass

from sidcore.errors import DataError

SID_SOFTMAX = ("full", "layer")
"""What a SID position's distribution is normalised over: ``full``, the whole SID range (every
layer's codes and ``<sid_end>``); ``layer``, only the ids that position can hold
(``SIDVocab.step_ids``), the set the trie's allowed children always fall in. The decoder trains and
decodes with the same one (``DecoderSpec.sid_softmax``)."""


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the default CPU decoder. ``head_dim`` 32 or 64 is what vLLM's CPU attention takes.

    Args:
        hidden_size: model width.
        layers: transformer blocks.
        heads: attention heads (``hidden_size == heads * head_dim`` is not required by Qwen3).
        kv_heads: key/value heads (grouped-query attention).
        head_dim: per-head width.
        intermediate_size: MLP width.
        max_positions: longest prompt + SID the model can see.
        attention_dropout: dropout on attention weights while training.
    """

    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    max_positions: int = 512
    attention_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise DataError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads}): each key/value head serves a group of heads")
