"""The SID part of the decoder vocabulary: one token per (layer, code), then ``<sid_end>``.

The tokenizer adds these tokens last and in this order (``tokenizer.extend_with_sid_tokens``), so
they occupy one contiguous id range starting at ``base``; the decode mask, the SID-only output
head and the training targets all address SID tokens by *local* id, ``token - base``.

    local id:  0 .. M1-1   M1 .. M1+M2-1   ...   sum(M)
    token:     <s1_0> ...  <s2_0> ...            <sid_end>
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Sequence

import numpy as np

from sidcore.errors import DataError


@dataclass(frozen=True)
class SIDVocab:
    """Layout of SID tokens in the decoder vocabulary.

    Token of (layer ``l``, code ``c``), layers counted from 0, is ``base + offsets[l] + c``;
    ``<sid_end>`` is ``base + sum(sizes)``. Token strings number layers from 1 (``<s1_12>``).
    """

    sizes: tuple[int, ...]
    base: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(int(m) for m in self.sizes))
        if not self.sizes or any(m < 1 for m in self.sizes) or self.base < 0:
            raise DataError(f"SID vocabulary needs positive codebook sizes and base >= 0, got {self.sizes}, {self.base}")

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(accumulate(self.sizes[:-1], initial=0))

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    @property
    def end_local(self) -> int:
        return sum(self.sizes)

    @property
    def num_local(self) -> int:
        return self.end_local + 1

    @property
    def end_token(self) -> int:
        return self.base + self.end_local

    def local(self, layer: int, code: int) -> int:
        if not (0 <= layer < self.num_layers and 0 <= code < self.sizes[layer]):
            raise DataError(f"no SID token for layer {layer} code {code} with sizes {self.sizes}")
        return self.offsets[layer] + code

    def token(self, layer: int, code: int) -> int:
        return self.base + self.local(layer, code)

    def layer_code(self, local: int) -> tuple[int, int] | None:
        """(layer, code) of a local id; ``None`` for ``<sid_end>``."""
        if not 0 <= local < self.num_local:
            raise DataError(f"local id {local} is outside [0, {self.num_local})")
        if local == self.end_local:
            return None
        layer = int(np.searchsorted(self.offsets, local, side="right")) - 1
        return layer, local - self.offsets[layer]

    def step_ids(self, layer: int) -> list[int]:
        """Local ids position ``layer`` of a SID can hold: that layer's codes, and ``<sid_end>`` after
        the first code (only ``<sid_end>`` after the last layer). The set a ``layer`` SID softmax
        normalises over."""
        if not 0 <= layer <= self.num_layers:
            raise DataError(f"SID position {layer} is outside [0, {self.num_layers}]")
        codes = list(range(self.offsets[layer], self.offsets[layer] + self.sizes[layer])) if layer < self.num_layers else []
        return codes + ([self.end_local] if layer else [])

    def sid_tokens(self, sid: Sequence[int]) -> list[int]:
        """Token ids of a SID followed by ``<sid_end>``: a decoder training target."""
        return [self.token(layer, int(c)) for layer, c in enumerate(sid)] + [self.end_token]

    def token_strings(self) -> list[str]:
        return [f"<s{layer + 1}_{c}>" for layer, m in enumerate(self.sizes) for c in range(m)] + ["<sid_end>"]
