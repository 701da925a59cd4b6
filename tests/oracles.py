"""Reference computations the fast paths are tested against (test-only code)."""

from __future__ import annotations

import torch

from sidcore.decoder.bundle import Decoder
from sidcore.decoder.model import sid_logits
from sidcore.decoder.prompt import as_prompt
from sidcore.engines.base import query_vectors


@torch.inference_mode()
def score_sids(decoder: Decoder, prompt, sids: list[tuple[int, ...]], vocab) -> list[float]:
    """Exact log-probability of ``sid + <sid_end>`` after ``prompt`` for each SID (teacher forcing,
    one full forward pass over the prompt's input embeddings and the SID's tokens per SID).

    The reference the beam search is tested against; it uses the same distribution: over the SID
    range, or with ``DecoderSpec.sid_softmax == "layer"`` over each position's own layer (its codes,
    and ``<sid_end>`` after the first code), written out here from the vocabulary's sizes.
    """
    model = decoder.model
    prompt = as_prompt(prompt)
    embeds, _ = decoder.prefill([prompt], query_vectors(decoder, [prompt]))
    out = []
    for sid in sids:
        local = [vocab.local(layer, c) for layer, c in enumerate(sid)] + [vocab.end_local]
        tokens = model.model.embed_tokens(torch.tensor([[vocab.base + t for t in local[:-1]]]))
        hidden = model.model(inputs_embeds=torch.cat([embeds, tokens], 1)).last_hidden_state[0, len(prompt) - 1 :]
        logits = sid_logits(model, hidden, vocab.base, vocab.num_local).float()
        if decoder.spec.sid_softmax == "layer":
            own = torch.zeros_like(logits, dtype=torch.bool)
            for position in range(len(local)):
                start = sum(vocab.sizes[:position])
                own[position, start : start + (vocab.sizes[position] if position < len(vocab.sizes) else 0)] = True
                own[position, vocab.end_local] = position > 0
            logits = logits.masked_fill(~own, float("-inf"))
        logp = torch.log_softmax(logits, -1)
        out.append(float(logp[torch.arange(len(local)), torch.tensor(local)].sum()))
    return out
