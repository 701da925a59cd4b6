"""The vLLM logits processor of the constrained beam search: one mask function, two runner adapters.

Every engine request is one beam for one step. Its ``SamplingParams.extra_args[MASK_KEY]``
carries the beam's allowed SID tokens as a packed bitmask over the SID range
``[base, base + num_local)``, and, for a decoder trained with the ``layer`` SID softmax, the ids
the softmax runs over (its position's layer, a second bitmask). The processor replaces that
request's logits row with that log-softmax on allowed ids and -inf everywhere else (the rest of
the vocabulary included), so with ``logprobs_mode="processed_logits"`` and temperature 0 the
returned top-K log-probs are exactly the distribution the torch engine scores. Requests without
the key pass through untouched.

Why the mask and not the beam's trie node: the EngineCore (and with it this processor) runs
in another process, which cannot see the service's in-memory trie; that trie also changes
under live cold-start inserts and version swaps. Shipping the allowed set keeps one source of
truth (the service's ``TrieMask``, via ``BeamSearch.allowed()``) and makes every request
self-contained, at num_local/8 bytes per beam.

vLLM 0.32 has two processor interfaces: the V1 model runner (CPU, and GPU when Model Runner V2
is off) keys state by persistent batch row and reports adds/removes/moves in ``update_state``;
Model Runner V2 (the CUDA default) keys state by a recycled request slot set in
``add_request`` and maps rows to slots per step through ``LogitsContext``. Which runner runs
is decided inside vLLM's config, and the frontend validates the processor class against that
runner's base class, so ``SIDMaskProcessor`` subclasses both: one class name works on either.
Both keep the same ``{index: SIDMask}`` table and end in ``apply_sid_masks``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from vllm.sampling_params import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor

MASK_KEY = "sa2crq_sid_mask"
"""``SamplingParams.extra_args`` key of a beam's mask: ``{"base", "num_local", "bits"}``, and
``"norm_bits"`` where the softmax runs over part of the SID range."""

NEG = float("-inf")


@dataclass(frozen=True)
class SIDMask:
    base: int
    allowed: torch.Tensor  # Bool [num_local], on CPU
    norm: torch.Tensor | None = None  # Bool [num_local]: the ids the softmax runs over; None: the whole range

    @property
    def num_local(self) -> int:
        return len(self.allowed)


def mask_args(allowed: np.ndarray, base: int, norm: np.ndarray | None = None) -> dict:
    """``extra_args`` for one beam: its Bool [num_local] allowed row packed 8 ids a byte, and the
    Bool [num_local] ids its softmax runs over (``None``: the whole SID range)."""
    spec = {"base": int(base), "num_local": len(allowed), "bits": np.packbits(allowed).tobytes()}
    if norm is not None:
        spec["norm_bits"] = np.packbits(norm).tobytes()
    return {MASK_KEY: spec}


def parse_mask(params: SamplingParams) -> SIDMask | None:
    """The request's mask, ``None`` if it carries none; ``ValueError`` if malformed."""
    spec = (params.extra_args or {}).get(MASK_KEY)
    if spec is None:
        return None
    try:
        base, n, bits = int(spec["base"]), int(spec["num_local"]), spec["bits"]
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"extra_args[{MASK_KEY!r}] needs int base, int num_local and bytes bits: {e}") from e
    if base < 0 or n < 1 or not isinstance(bits, bytes) or len(bits) != (n + 7) // 8:
        raise ValueError(f"extra_args[{MASK_KEY!r}]: base {base} >= 0, num_local {n} >= 1 and {(n + 7) // 8} bytes of bits required")
    norm_bits = spec.get("norm_bits")
    if norm_bits is not None and (not isinstance(norm_bits, bytes) or len(norm_bits) != len(bits)):
        raise ValueError(f"extra_args[{MASK_KEY!r}]: norm_bits must be {len(bits)} bytes like bits")

    def unpack(b: bytes) -> torch.Tensor:
        return torch.from_numpy(np.unpackbits(np.frombuffer(b, dtype=np.uint8), count=n).astype(bool))

    return SIDMask(base, unpack(bits), None if norm_bits is None else unpack(norm_bits))


def apply_sid_masks(logits: torch.Tensor, rows: Sequence[int], masks: Sequence[SIDMask]) -> torch.Tensor:
    """In place: ``logits[row]`` becomes the log-softmax over its mask's ``norm`` ids (the SID range
    without one) on its allowed ids, -inf elsewhere."""
    groups: dict[tuple[int, int, bool], list[int]] = defaultdict(list)
    for j, m in enumerate(masks):
        groups[m.base, m.num_local, m.norm is not None].append(j)
    for (base, n, has_norm), members in groups.items():
        idx = torch.tensor([rows[j] for j in members], device=logits.device)
        allowed = torch.stack([masks[j].allowed for j in members]).to(logits.device, non_blocking=True)
        sid = logits[idx, base : base + n].float()
        if has_norm:
            sid = sid.masked_fill_(~torch.stack([masks[j].norm for j in members]).to(logits.device, non_blocking=True), NEG)
        logp = torch.log_softmax(sid, -1).masked_fill_(~allowed, NEG)
        logits[idx] = NEG
        logits[idx, base : base + n] = logp.to(logits.dtype)
    return logits


class SIDMaskProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """Applies each beam request's SID mask; both runner interfaces over one ``{index: SIDMask}`` table.

    V1 constructs it with ``(vllm_config, device, is_pin_memory)``, indexes by batch row and calls
    ``update_state`` + ``apply(logits)``; V2 constructs it with ``(vllm_config, req_states)``,
    indexes by request slot and calls ``add_request`` + ``apply(logits, ctx)``.
    """

    def __init__(self, vllm_config, *runner_args):
        # Nothing to keep from either runner's arguments: rows and devices come with each apply().
        self.masks: dict[int, SIDMask] = {}

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        # Runs in the frontend at admission, so a malformed mask fails its request, not the engine.
        parse_mask(sampling_params)

    # V1 model runner.
    def is_argmax_invariant(self) -> bool:
        # Masking moves the argmax; True would make V1 skip the processor for greedy requests.
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        # vLLM's own processors apply added, then removed, then moved (builtin.process_dict_updates).
        for index, params, _prompt, _output in batch_update.added:
            self._set(index, parse_mask(params))
        for index in batch_update.removed:
            self.masks.pop(index, None)
        for a, b, direction in batch_update.moved:
            at_a, at_b = self.masks.pop(a, None), self.masks.pop(b, None)
            self._set(b, at_a)
            if direction == MoveDirectionality.SWAP:
                self._set(a, at_b)

    # Model Runner V2: slots are recycled without a remove callback, so every add overwrites.
    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        mask = parse_mask(sampling_params)
        self._set(req_idx, mask)
        return mask is not None

    def apply(self, logits: torch.Tensor, ctx: LogitsContext | None = None) -> torch.Tensor:
        if not self.masks:
            return logits
        # V1 keys state by row itself; V2 by the slot each row maps to.
        indices = range(len(logits)) if ctx is None else self._slots(logits, ctx)
        hits = [(row, self.masks[index]) for row, index in enumerate(indices) if index in self.masks]
        if hits:
            apply_sid_masks(logits, [r for r, _ in hits], [m for _, m in hits])
        return logits

    @staticmethod
    def _slots(logits: torch.Tensor, ctx: LogitsContext) -> list[int]:
        """Row -> request slot; the host copy serves unless speculative decoding gives a request several rows."""
        if len(logits) == len(ctx.idx_mapping_np):
            return ctx.idx_mapping_np.tolist()
        return ctx.expanded_idx_mapping.tolist()

    def _set(self, index: int, mask: SIDMask | None) -> None:
        if mask is None:
            self.masks.pop(index, None)
        else:
            self.masks[index] = mask
