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

from service.decoder.bundle import Decoder
from service.decoder.model import sid_logits
from service.engines.base import DecodeStats, Engine, Hit
from service.index.mask import INVALID, TrieMask

NEG = float("-inf")


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, decoder: Decoder, mask: Callable[[], TrieMask] | TrieMask, length_penalty: float = 0.0):
        """``mask``: a TrieMask, or a callable returning the current one (the trie can be swapped)."""
        self.decoder = decoder
        self.model = decoder.model
        self.device = next(self.model.parameters()).device
        self._mask = mask if callable(mask) else (lambda: mask)
        self.length_penalty = length_penalty

    def _final(self, score: float, length: int) -> float:
        return score / (length + 1) ** self.length_penalty if self.length_penalty else score

    def _bound(self, live: float, num_layers: int) -> float:
        """Best final score a live beam can still reach: log-probs only lower its sum."""
        return live / (num_layers + 1) ** self.length_penalty if self.length_penalty else live

    def _forward(self, ids, attn, pos, cache) -> torch.Tensor:
        out = self.model.model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True)
        return out.last_hidden_state[:, -1]

    @torch.inference_mode()
    def decode(self, prompts: list[list[int]], beam_width: int, num_sids: int, constrained: bool = True):
        mask = self._mask()
        vocab = mask.vocab
        S, end, L = vocab.num_local, vocab.end_local, vocab.num_layers
        R, W, dev = len(prompts), beam_width, self.device
        pad = self.decoder.tokenizer.pad_token_id
        stats = DecodeStats()

        P = max(map(len, prompts))
        ids = torch.full((R, P), pad, dtype=torch.long)
        attn = torch.zeros((R, P), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, P - len(p) :] = torch.tensor(p)
            attn[r, P - len(p) :] = 1
        lengths = attn.sum(1)
        cache = DynamicCache(config=self.model.config)
        h = self._forward(ids.to(dev), attn.to(dev), (attn.cumsum(1) - 1).clamp(min=0).to(dev), cache)
        cache.batch_repeat_interleave(W)
        h = h.repeat_interleave(W, 0)
        attn = attn.repeat_interleave(W, 0).to(dev)
        pos = lengths.repeat_interleave(W).to(dev)

        scores = torch.full((R, W), NEG, device=dev)
        scores[:, 0] = 0.0
        nodes = torch.full((R * W,), mask.root, dtype=torch.long)
        tokens = torch.zeros((R * W, 0), dtype=torch.long)
        finished: list[list[Hit]] = [[] for _ in range(R)]
        done = torch.zeros(R, dtype=torch.bool)
        offsets = torch.tensor(vocab.offsets, dtype=torch.long)
        layer_of = torch.repeat_interleave(torch.arange(L + 1), torch.tensor([*vocab.sizes, 1]))

        for depth in range(L + 1):
            stats.steps += 1
            logp = torch.log_softmax(sid_logits(self.model, h, vocab.base, S).float(), -1).cpu()
            if constrained:
                allowed = mask.allowed(nodes.clamp(min=0))
            else:
                allowed = (layer_of == depth) | ((layer_of == L) & (depth > 0))
                allowed = allowed.expand(R * W, S)
            cand = (scores.cpu().view(-1, 1) + logp).masked_fill_(~allowed, NEG)

            ends = cand[:, end].view(R, W)
            for r, w in torch.nonzero(ends > NEG).tolist():
                row = r * W + w
                sid = tuple((tokens[row] - offsets[:depth]).tolist())
                node = int(nodes[row])
                if node >= 0 and not mask.trie.terminal[node]:
                    node = INVALID  # unconstrained: a prefix of SIDs, not an SID
                finished[r].append(Hit(sid, self._final(float(ends[r, w]), depth), node))
            stats.finished_per_depth[depth] = int((ends > NEG).sum())

            cand[:, end] = NEG
            if depth == L:
                break
            top_s, top_i = cand.view(R, W * S).topk(W, dim=1)
            for r in range(R):
                fin = sorted((hit.score for hit in finished[r]), reverse=True)
                if len(fin) >= num_sids and fin[num_sids - 1] >= self._bound(float(top_s[r, 0]), L):
                    done[r] = True
            top_s[done] = NEG
            if not torch.isfinite(top_s).any():
                break

            src = (torch.arange(R).view(R, 1) * W + top_i // S).view(-1)
            tok = (top_i % S).view(-1)
            prev = nodes[src]
            nodes = torch.full_like(prev, INVALID)
            live = prev >= 0
            nodes[live] = mask.step(prev[live], tok[live])
            tokens = torch.cat([tokens[src], tok.view(-1, 1)], 1)
            scores = top_s.to(dev)

            src_dev = src.to(dev)
            for layer in cache.layers:
                layer.keys[:, :, P:] = layer.keys[src_dev, :, P:]
                layer.values[:, :, P:] = layer.values[src_dev, :, P:]
            attn = torch.cat([attn, torch.ones((R * W, 1), dtype=attn.dtype, device=dev)], 1)
            h = self._forward((vocab.base + tok).view(-1, 1).to(dev), attn, (pos + depth).view(-1, 1), cache)

        return [sorted(f, key=lambda hit: -hit.score)[:num_sids] for f in finished], stats


@torch.inference_mode()
def score_sids(decoder: Decoder, prompt: list[int], sids: list[tuple[int, ...]], vocab) -> list[float]:
    """Exact log-probability of ``sid + <sid_end>`` after ``prompt`` for each SID (teacher forcing).

    The reference the beam search is tested against; it uses the same SID-range distribution.
    """
    model = decoder.model
    out = []
    for sid in sids:
        local = [vocab.local(layer, c) for layer, c in enumerate(sid)] + [vocab.end_local]
        ids = torch.tensor([prompt + [vocab.base + t for t in local[:-1]]])
        hidden = model.model(input_ids=ids).last_hidden_state[0, len(prompt) - 1 :]
        logp = torch.log_softmax(sid_logits(model, hidden, vocab.base, vocab.num_local).float(), -1)
        out.append(float(logp[torch.arange(len(local)), torch.tensor(local)].sum()))
    return out
