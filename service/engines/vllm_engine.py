"""The vLLM engine: the shared constrained beam search driven step by step over vLLM's ``AsyncLLM``.

Per step every live beam is one engine request: prompt + the beam's SID tokens, one new token,
the top ``min(2W, allowed)`` log-probs, temperature 0, and the beam's allowed SID tokens packed into
``extra_args`` for ``SIDMaskProcessor`` (see vllm_processor.py for why the mask travels with the
request). With ``logprobs_mode="processed_logits"`` those log-probs are the processor's masked
SID-range log-softmax verbatim, and per-beam top-2W is all ``BeamSearch`` needs to select
exactly what the torch engine selects. All requests of a step are in flight together, so vLLM
batches them; prefix caching lets the beams of a request share their prompt's KV blocks.

A decoder whose prompts add to their token embeddings (soft query vectors, history items'
content: ``decoder.model.PromptInputs``) is served through vLLM's prompt-embeddings input: each
prompt's input embeddings are computed once per call by the decoder's own ``prefill`` and sent,
with the beam's SID-token embeddings appended, as ``embeds_input`` (``enable_prompt_embeds``);
vLLM hashes embeddings per KV block, so the beams still share their prompt's blocks.

``AsyncLLM`` is bound to the event loop it runs on, so the engine owns one loop in a background
thread: ``decode``, from any thread, runs the search there.
vLLM is imported lazily: importing this module does not need it installed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sidcore.decoder.bundle import Decoder
from sidcore.decoder.prompt import Prompt, as_prompt, max_prompt_tokens
from sidcore.engines.base import DecodeStats, Engine, Hit, default_mask, length_penalty_of, query_vectors
from sidcore.engines.beam import NEG, BeamSearch
from sidcore.index.item_mask import ItemMask
from sidcore.index.mask import TrieMask

log = logging.getLogger(__name__)

PROCESSOR = "service.engines.vllm_processor:SIDMaskProcessor"
"""By name, because the EngineCore process imports it itself."""

CPU_ENV = {
    # Tiny per-beam ops gain nothing from intra-op threads and their spin-waits steal the core
    # this (client) process needs; vLLM 0.32 also drops to one thread for serving when this is
    # unset, setting it keeps that true for start-up and other versions. A worker inside
    # EngineCore saves a process and ~13 s of start-up on 2 cores.
    "OMP_NUM_THREADS": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}
"""Defaults for the engine process on CPU; variables already set in the environment win."""


@contextmanager
def _environ_defaults(values: dict[str, str]):
    """Set the absent ``values`` while vLLM spawns its engine process (which inherits them), then unset them."""
    added = [key for key in values if key not in os.environ]
    os.environ.update({key: values[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(
        self,
        decoder: Decoder,
        mask: Callable[[], TrieMask] | TrieMask | None = None,
        *,
        max_beam_width: int = 128,
        max_model_len: int | None = None,
        max_num_seqs: int | None = None,
        kv_cache_bytes: int | None = None,
        length_penalty: float | None = None,
        **engine_args: Any,
    ):
        """Start vLLM on ``decoder``'s checkpoint and warm it up.

        Args:
            mask: the default mask of ``decode`` calls that pass none: a TrieMask, or a callable
                returning the current one (the trie can be swapped).
            max_beam_width: widest beam ``decode`` accepts; sizes ``max_logprobs`` (2x).
            max_model_len: longest prompt + SID; default: the prompt template's cap + L + 1.
            max_num_seqs: beams vLLM runs at once (more queue); default max(256, max_beam_width).
            kv_cache_bytes: KV cache size; default 256 MiB on CPU, ``gpu_memory_utilization`` on GPU.
            length_penalty: scores divided by ``(length + 1) ** length_penalty``; None: the decoder's own (``DecoderSpec.length_penalty``).
            engine_args: any other ``AsyncEngineArgs`` field; also overrides the defaults set here.
        """
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform

        self.decoder = decoder
        self._mask = default_mask(mask)
        self.max_beam_width = max_beam_width
        self.length_penalty = length_penalty_of(decoder, length_penalty)
        cpu = current_platform.is_cpu()
        spec = decoder.spec
        defaults: dict[str, Any] = dict(
            model=str(decoder.path / "model"),
            skip_tokenizer_init=True,  # prompts arrive as token ids
            max_model_len=max_model_len or max_prompt_tokens(spec.prompt, len(spec.sizes)) + len(spec.sizes) + 1,
            max_num_seqs=max_num_seqs or max(256, max_beam_width),
            max_logprobs=2 * max_beam_width,
            logprobs_mode="processed_logits",
            logits_processors=[PROCESSOR],
            enable_prefix_caching=True,
            kv_cache_memory_bytes=kv_cache_bytes or (256 << 20 if cpu else None),
            disable_log_stats=True,
            enable_prompt_embeds=not decoder.inputs.empty,
        )
        if cpu:
            # float32 matches the torch engine; CPU attention wants blocks in multiples of 32;
            # eager skips minutes of torch.compile for no gain on tiny models.
            defaults.update(dtype="float32", block_size=32, enforce_eager=True)
        args = AsyncEngineArgs(**{**defaults, **engine_args})
        started = time.perf_counter()

        self._ids = (f"beam-{i}" for i in itertools.count())  # unique per AsyncLLM, which this engine owns
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine-loop", daemon=True)
        self._thread.start()
        try:
            with _environ_defaults(CPU_ENV) if cpu else nullcontext():
                self._llm = self._run(self._start(args)).result()
            self._check_vocab()
            self._run(self._warm_up()).result()
        except BaseException:
            self.close()
            raise
        log.info("vLLM engine up in %.1f s (%s, max beam %d)", time.perf_counter() - started, current_platform.device_type, max_beam_width)

    # Lifecycle.

    async def _start(self, args):
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(args)

    def _check_vocab(self) -> None:
        vocab = self.decoder.spec.vocab
        size = self._llm.model_config.get_vocab_size()
        if vocab.base + vocab.num_local > size:
            raise ValueError(f"SID range [{vocab.base}, {vocab.base + vocab.num_local}) exceeds the model's vocabulary ({size})")

    async def _warm_up(self) -> None:
        from service.engines.vllm_processor import mask_args

        # The first requests pay seconds of one-off set-up; pay them here, on the masked path.
        vocab = self.decoder.spec.vocab
        args = mask_args(np.ones(vocab.num_local, dtype=bool), vocab.base)
        await asyncio.gather(*(self._top_logprobs(self._input(Prompt((vocab.base,) * n), None, []), args, 2) for n in (1, 2)))

    def close(self) -> None:
        """Stop the vLLM engine (its process included) and the loop thread. Idempotent."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            self._run(self._shutdown(llm)).result()
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    @staticmethod
    async def _shutdown(llm) -> None:
        llm.shutdown()

    # Decoding.

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def decode(self, prompts: Sequence[Prompt | Sequence[int]], beam_width: int, num_sids: int, constrained: bool = True,
               mask: TrieMask | None = None, item_masks: list[ItemMask | None] | None = None) -> tuple[list[list[Hit]], DecodeStats]:
        return self._submit(prompts, beam_width, num_sids, constrained, mask, item_masks).result()

    def _submit(self, prompts, beam_width, num_sids, constrained, mask=None, item_masks=None):
        """Checks and prompt embeddings in the caller's thread, then the search on the engine's loop."""
        if self._llm is None:
            raise RuntimeError("the vLLM engine is closed")
        if not 1 <= beam_width <= self.max_beam_width:
            raise ValueError(f"beam_width must be in [1, {self.max_beam_width}], got {beam_width}")
        prompts = [as_prompt(p) for p in prompts]
        return self._run(self._decode(prompts, self._prompt_embeds(prompts), beam_width, num_sids, constrained, mask or self._mask(),
                                      item_masks))

    def _prompt_embeds(self, prompts: list[Prompt]) -> list[torch.Tensor] | None:
        """Each prompt's input embeddings [P_r, H] in the model's dtype, or None when the decoder adds
        nothing to token embeddings (prompts then go as token ids)."""
        if self.decoder.inputs.empty:
            return None
        embeds, attn = self.decoder.prefill(prompts, query_vectors(self.decoder, prompts))
        dtype = self._llm.model_config.dtype
        return [e[a.bool()].to("cpu", dtype) for e, a in zip(embeds, attn)]

    def _sid_embeds(self, tokens: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            return self.decoder.model.model.embed_tokens(torch.tensor(tokens, dtype=torch.long)).to("cpu", self._llm.model_config.dtype)

    async def _decode(self, prompts, embeds, beam_width, num_sids, constrained, mask, item_masks=None):
        # The item masks act through search.allowed(), which _step ships to vLLM per beam.
        search = BeamSearch(mask, len(prompts), beam_width, num_sids, self.length_penalty, constrained, item_masks)
        while search.advance(await self._step(search, prompts, embeds)) is not None:
            pass
        return search.results(), search.stats

    def _input(self, prompt: Prompt, embeds: torch.Tensor | None, suffix: list[int]):
        """One beam's engine input: its prompt and the SID tokens it has generated."""
        from vllm.inputs import embeds_input, tokens_input

        if embeds is None:
            return tokens_input([*prompt.ids, *suffix])
        return embeds_input(torch.cat([embeds, self._sid_embeds(suffix)]) if suffix else embeds)

    async def _step(self, search: BeamSearch, prompts: list[Prompt], embeds: list[torch.Tensor] | None) -> torch.Tensor:
        """Masked log-probs [R*W, S] of this step: each live beam's top 2W, -inf elsewhere."""
        from service.engines.vllm_processor import mask_args

        base, S, W = search.vocab.base, search.S, search.W
        rows = torch.nonzero(search.live).view(-1).tolist()
        allowed = search.allowed().numpy()
        # Past a beam's allowed count the top-k is only -inf entries: asking for fewer saves
        # vLLM building them (its per-entry cost dominated the client at beam 100).
        k = np.minimum(2 * W, allowed.sum(1)).tolist()
        suffixes = (search.tokens + base).tolist()
        norm = None
        if self.decoder.spec.sid_softmax == "layer":
            norm = np.zeros(S, dtype=bool)
            norm[search.vocab.step_ids(search.depth)] = True
        tops = await asyncio.gather(*(
            self._top_logprobs(self._input(prompts[r // W], None if embeds is None else embeds[r // W], suffixes[r]), mask_args(allowed[r], base, norm), k[r])
            for r in rows
        ))
        row = np.repeat(rows, [len(tokens) for tokens, _ in tops])
        token = np.concatenate([tokens for tokens, _ in tops]) - base
        value = np.concatenate([values for _, values in tops]).astype(np.float32)
        keep = (token >= 0) & (token < S) & (value > NEG)  # a short allowed set pads its top-k with masked ids
        logp = torch.full((search.R * W, S), NEG)
        logp[row[keep], token[keep]] = torch.from_numpy(value[keep])
        return logp

    async def _top_logprobs(self, engine_input, extra_args: dict, k: int) -> tuple[list[int], list[float]]:
        """One beam, one step: the top ``k`` token ids and their masked log-probs (plus the sampled one)."""
        from vllm import SamplingParams

        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprobs=k,
            flat_logprobs=True,  # plain lists instead of a Logprob object per entry
            detokenize=False,
            skip_clone=True,  # nothing mutates it, and the copy cost ~0.7 ms a request
            extra_args=extra_args,
        )
        final = None
        async for out in self._llm.generate(engine_input, params, request_id=next(self._ids)):
            final = out
        top = final.outputs[0].logprobs  # one position: the whole flat container
        return top.token_ids, top.logprobs
