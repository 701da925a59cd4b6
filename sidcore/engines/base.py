"""The engine interface: prompts in, ranked SIDs out, under one trie mask.

Scores are sums of log-probabilities over the SID range (codes + ``<sid_end>``), divided by
``(length + 1) ** length_penalty`` (by default the decoder's own, ``DecoderSpec.length_penalty``). A beam finishes when it emits
``<sid_end>`` at a terminal node; decoding stops when no live beam can beat the ``num_sids``-th
finished SID, or at depth L. Constrained decoding only ever yields SIDs of the index;
unconstrained decoding (layer order kept, trie ignored) reports SIDs that are not in it with
``node == -1``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from sidcore.decoder.prompt import Prompt
from sidcore.index.item_mask import ItemMask
from sidcore.index.mask import TrieMask


@dataclass(frozen=True)
class Hit:
    sid: tuple[int, ...]
    score: float
    node: int  # trie node of the SID; -1 when it is not in the index


@dataclass
class DecodeStats:
    """Per call: decode steps run and beams finished at each depth (for metrics)."""

    steps: int = 0
    finished_per_depth: dict[int, int] = field(default_factory=dict)


def query_vectors(decoder, prompts: Sequence[Prompt]) -> "np.ndarray | None":
    """The prompts' query embeddings [R, D] (computed once by the retriever and carried by the
    prompts; embedded here for prompts built without them), or None when the decoder uses none."""
    if not decoder.spec.prompt.soft_vectors or not any(p.query for p in prompts):
        return None
    if all(p.query_vector is not None or not p.query for p in prompts):
        dim = next(p.query_vector for p in prompts if p.query_vector is not None).shape[0]
        return np.stack([p.query_vector if p.query_vector is not None else np.zeros(dim, dtype=np.float32) for p in prompts])
    return decoder.query_vectors([p.query for p in prompts])


def length_penalty_of(decoder, length_penalty: float | None) -> float:
    """The penalty an engine scores with: ``length_penalty`` when given, else the one the decoder's
    validation cases chose (``DecoderSpec.length_penalty``)."""
    return decoder.spec.length_penalty if length_penalty is None else length_penalty


def default_mask(mask: Callable[[], TrieMask] | TrieMask | None) -> Callable[[], TrieMask]:
    """An engine's fallback for ``decode(..., mask=None)``: a fixed mask, the current one, or none."""
    if mask is None:

        def missing() -> TrieMask:
            raise ValueError("this engine has no default mask: pass mask= to decode")

        return missing
    return mask if callable(mask) else (lambda: mask)


class Engine(ABC):
    """Decodes prompts into ranked SIDs under a trie mask; ``close`` releases what it holds."""

    name: str
    length_penalty: float  # SID scores are divided by (length + 1) ** this

    @abstractmethod
    def decode(
        self, prompts: Sequence[Prompt | Sequence[int]], beam_width: int, num_sids: int, constrained: bool = True, mask: TrieMask | None = None,
        item_masks: list[ItemMask | None] | None = None,
    ) -> tuple[list[list[Hit]], DecodeStats]:
        """Top ``num_sids`` SIDs per prompt (best first), decoded with ``beam_width`` beams.

        ``mask`` pins the trie snapshot for this call (the service decodes and maps SIDs to items
        under one snapshot); default: the engine's current mask. ``item_masks`` (one per prompt,
        None for none) prune SIDs whose items a request may not return (``BeamSearch``).
        """

    def close(self) -> None:
        """Release the engine's resources (processes, threads, device memory). Idempotent."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
