"""The torch engine: a dedicated constrained beam runner over transformers' Qwen3.

Per batch of requests: prefill every prompt once (left-padded, one forward), replicate its KV
to the beams, then per step run one forward over all beams of all requests, compute the output
head over the SID range only, mask with the shared ``TrieMask`` and select beams with tensor
ops. Beams of one request share an identical prompt, so reordering beams only moves the few
generated positions of the KV cache, never the prompt part.
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import DynamicCache

from sidcore.decoder.bundle import Decoder
from sidcore.decoder.model import sid_logits
from sidcore.engines.base import Engine, default_mask
from sidcore.engines.beam import NEG, BeamSearch
from sidcore.index.item_mask import ItemMask
from sidcore.index.mask import TrieMask


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, decoder: Decoder, mask: Callable[[], TrieMask] | TrieMask | None = None, length_penalty: float = 0.0):
        """``mask``: the default mask of ``decode`` calls that pass none: a TrieMask, or a callable
        returning the current one (the trie can be swapped)."""
        self.decoder = decoder
        self.model = decoder.model
        self.device = next(self.model.parameters()).device
        self._mask = default_mask(mask)
        self.length_penalty = length_penalty

    def _forward(self, ids, attn, pos, cache) -> torch.Tensor:
        out = self.model.model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True)
        return out.last_hidden_state[:, -1]

    @torch.inference_mode()
    def decode(self, prompts: list[list[int]], beam_width: int, num_sids: int, constrained: bool = True, mask: TrieMask | None = None,
               item_masks: list[ItemMask | None] | None = None):
        mask = mask or self._mask()
        search = BeamSearch(mask, len(prompts), beam_width, num_sids, constrained, self.length_penalty, item_masks)
        vocab, R, W, dev = mask.vocab, len(prompts), beam_width, self.device

        P = max(map(len, prompts))
        ids = torch.full((R, P), self.decoder.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros((R, P), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, P - len(p) :] = torch.tensor(p)
            attn[r, P - len(p) :] = 1
        pos = attn.sum(1).repeat_interleave(W).view(-1, 1).to(dev)
        cache = DynamicCache(config=self.model.config)
        h = self._forward(ids.to(dev), attn.to(dev), (attn.cumsum(1) - 1).clamp(min=0).to(dev), cache)
        cache.batch_repeat_interleave(W)
        h = h.repeat_interleave(W, 0)
        attn = attn.repeat_interleave(W, 0).to(dev)

        while True:
            logp = torch.log_softmax(sid_logits(self.model, h, vocab.base, vocab.num_local).float(), -1).cpu()
            step = search.advance(logp.masked_fill_(~search.allowed(), NEG))
            if step is None:
                return search.results(), search.stats
            src, tok = (t.to(dev) for t in step)
            for layer in cache.layers:
                layer.keys[:, :, P:] = layer.keys[src, :, P:]
                layer.values[:, :, P:] = layer.values[src, :, P:]
            attn = torch.cat([attn, torch.ones((R * W, 1), dtype=attn.dtype, device=dev)], 1)
            h = self._forward((vocab.base + tok).view(-1, 1), attn, pos + search.depth - 1, cache)
