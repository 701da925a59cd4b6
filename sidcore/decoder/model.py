"""The decoder: transformers' Qwen3ForCausalLM, tiny by default, or a local Qwen3 checkpoint; and
``PromptInputs``, what a prompt adds to its token embeddings (see ``prompt.py``).

Only the SID rows of the output head are ever used: training scores the next SID token over the
SID range (codes + ``<sid_end>``) and decoding computes exactly those logits, so both see one
distribution. On 2 cores that is the difference between ~17 ms and ~240 ms per step at 100 beams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from transformers import Qwen3Config, Qwen3ForCausalLM

from sidcore.decoder.config import TinyConfig


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
        attention_dropout=cfg.attention_dropout,
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


def _layer_logits(model: Qwen3ForCausalLM, hidden: torch.Tensor, vocab, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SID position ``position``'s own ids (long [C], ``SIDVocab.step_ids``) and the logits over
    them, hidden (..., H) -> (..., C)."""
    ids = torch.tensor(vocab.step_ids(position), device=hidden.device)
    return ids, hidden @ model.lm_head.weight[vocab.base + ids].T


def sid_log_probs(model: Qwen3ForCausalLM, hidden: torch.Tensor, vocab, layer: int | None) -> torch.Tensor:
    """Log-probabilities over the SID range, float32 [N, num_local], from hidden states [N, H] at SID
    position ``layer`` (all rows at that position): normalised over the position's own ids, -inf
    elsewhere; ``None``: over the whole range (``full``)."""
    if layer is None:
        return torch.log_softmax(sid_logits(model, hidden, vocab.base, vocab.num_local).float(), -1)
    ids, logits = _layer_logits(model, hidden, vocab, layer)
    out = torch.full((len(hidden), vocab.num_local), float("-inf"), device=hidden.device)
    out[:, ids] = torch.log_softmax(logits.float(), -1)
    return out


def layer_sid_loss(model: Qwen3ForCausalLM, hidden: torch.Tensor, labels: torch.Tensor, vocab, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of SID labels under the ``layer`` softmax: hidden [P, H] at P labelled
    positions, labels [P] local ids, each SID's codes then its ``<sid_end>`` in order (as a row's
    labels read when flattened), so an end label's layer is the one after the label before it.
    Each position's logits cover only its layer's ids: a quarter of the full range's work with
    three layers, and no gradient spent pushing other layers' codes down where the trie never
    allows them."""
    offsets = torch.tensor(vocab.offsets, device=labels.device)
    layer = torch.bucketize(labels, offsets, right=True) - 1
    end = labels == vocab.end_local
    layer[end] = layer[end.nonzero()[:, 0] - 1] + 1
    total = hidden.new_zeros((), dtype=torch.float32)
    # A position's ids are its layer's codes in order, then <sid_end>: a code's class is its code.
    for position in range(vocab.num_layers):
        at = (layer == position).nonzero()[:, 0]
        if len(at) == 0:
            continue
        _, logits = _layer_logits(model, hidden[at], vocab, position)
        goal = torch.where(end[at], vocab.sizes[position], labels[at] - vocab.offsets[position])
        total = total + F.cross_entropy(logits.float(), goal, label_smoothing=label_smoothing, reduction="sum")
    # The end after the last layer is the position's one id: it costs nothing.
    return total / max(len(labels), 1)


class PromptInputs(nn.Module):
    """What a prompt adds to its token embeddings.

    Args:
        hidden: the decoder's width.
        embed_dim: width of the MiniLM embeddings (384).
        soft_vectors: input vectors a query's embedding becomes at its ``<soft>`` slots (0: none).
        item_content: ``none``, ``minilm``, ``id``, ``minilm+id`` or ``minilm+collab+id`` (see ``PromptConfig``).
        num_items: rows of the item table (for ``id`` content).
        collab_dim: width of each item's collaborative vectors, which ``collab`` content projects
            beside its MiniLM embedding (one linear map over the two, concatenated).
    """

    def __init__(self, hidden: int, embed_dim: int, soft_vectors: int, item_content: str, num_items: int, collab_dim: int = 0):
        super().__init__()
        parts = item_content.split("+")
        if ("collab" in parts) != (collab_dim > 0):
            raise ValueError(f"item content {item_content!r} with collab_dim {collab_dim}: collab content needs its vectors' width, and only it")
        self.hidden, self.soft_vectors = hidden, soft_vectors
        self.soft = nn.Linear(embed_dim, soft_vectors * hidden) if soft_vectors else None
        self.content = nn.Linear(embed_dim + collab_dim, hidden, bias=False) if "minilm" in parts else None
        self.item = nn.Embedding(num_items, hidden) if "id" in parts else None
        for module in (self.soft, self.content, self.item):
            if module is not None:
                nn.init.normal_(module.weight, std=0.02)

    @property
    def empty(self) -> bool:
        return self.soft is None and self.content is None and self.item is None

    def save(self, path: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path))

    def load(self, path: Path) -> "PromptInputs":
        self.load_state_dict(load_file(str(path)))
        return self


def embed_inputs(
    model: Qwen3ForCausalLM,
    inputs: PromptInputs,
    ids: torch.Tensor,
    soft_id: int,
    query_vectors: torch.Tensor | None,
    content_rows: torch.Tensor | None,
    item_vectors: torch.Tensor | None,
) -> torch.Tensor:
    """Input embeddings [B, T, H] of token ids [B, T] plus the prompt's additions.

    Args:
        ids: long [B, T] token ids.
        soft_id: token id of ``<soft>``; row b's k-th ``<soft>`` slot gets the k-th soft vector of
            ``query_vectors[b]``.
        query_vectors: float [B, D] MiniLM embedding of each row's query (zeros where none).
        content_rows: long [B, T] item-table row whose content the position carries, -1 for none.
        item_vectors: float [N, D (+ C)] MiniLM embedding of every item-table row, its collaborative
            vectors appended for ``collab`` content (``ItemTable.content``).
    """
    x = model.model.embed_tokens(ids)
    if inputs.empty:
        return x
    add = torch.zeros_like(x)
    if inputs.soft is not None and query_vectors is not None:
        slots = ids == soft_id  # [B, T]
        if slots.any():
            soft = inputs.soft(query_vectors).view(len(ids), inputs.soft_vectors, inputs.hidden)  # [B, S, H]
            nth = (slots.cumsum(1) - 1).clamp(min=0, max=inputs.soft_vectors - 1)  # which slot of the row
            rows = torch.arange(len(ids), device=ids.device).unsqueeze(1).expand_as(ids)
            add = add + torch.where(slots.unsqueeze(-1), soft[rows, nth], 0.0)
    if content_rows is not None and (inputs.content is not None or inputs.item is not None):
        at = content_rows >= 0
        if at.any():
            add = add.index_put((at,), item_outputs(inputs, item_vectors, content_rows[at]), accumulate=True)
    return x + add


def item_outputs(inputs: PromptInputs, item_vectors: torch.Tensor | None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """float [R, H]: item-table rows as the prompt inputs represent them (projected MiniLM
    embedding plus learned embedding, as on a history item's marker).

    Args:
        item_vectors: float [N, D (+ C)] MiniLM embedding of every item-table row, its collaborative
            vectors appended for ``collab`` content (``ItemTable.content``).
        rows: long [R] the rows wanted; None: all N.
    """
    parts = []
    if inputs.content is not None:
        parts.append(inputs.content(item_vectors if rows is None else item_vectors[rows]))
    if inputs.item is not None:
        parts.append(inputs.item.weight if rows is None else inputs.item(rows))
    return sum(parts[1:], parts[0])


def as_float_tensor(a: np.ndarray | None, device) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)
