"""The decoder: transformers' Qwen3ForCausalLM, tiny by default, or a local Qwen3 checkpoint.

Only the SID rows of the output head are ever used: training scores the next SID token over the
SID range (codes + ``<sid_end>``) and decoding computes exactly those logits, so both see one
distribution. On 2 cores that is the difference between ~17 ms and ~240 ms per step at 100 beams.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM


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
    """

    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    max_positions: int = 512


def new_tiny_model(cfg: TinyConfig, vocab_size: int, pad_id: int, seed: int) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=False,
        pad_token_id=pad_id,
        bos_token_id=pad_id,
        eos_token_id=pad_id,
    )
    return Qwen3ForCausalLM(config)


def load_base_model(path: Path, vocab_size: int) -> Qwen3ForCausalLM:
    """A local Qwen3 checkpoint, its embeddings grown to cover the new SID tokens."""
    model = Qwen3ForCausalLM.from_pretrained(str(path), torch_dtype=torch.float32)
    if vocab_size > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(vocab_size)
    return model


def sid_logits(model: Qwen3ForCausalLM, hidden: torch.Tensor, base: int, num_local: int) -> torch.Tensor:
    """Logits over the SID range only: hidden (..., H) -> (..., num_local)."""
    weight = model.lm_head.weight[base : base + num_local]
    return hidden @ weight.T
