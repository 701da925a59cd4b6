"""A decoder version as the engines use it: model, tokenizer, SID token layout, prompt builder.

Store layout of a ``decoder`` version: ``model/`` (transformers save_pretrained), ``tokenizer/``,
``titles.json`` (item id -> title, for title-bearing history prompts) and ``decoder.json``
(the index version it was trained for and that index's quantizer fingerprint, SID sizes, the SID
token base, prompt config).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

from model_store import Store
from sidcore.decoder.prompt import MARKERS, HistoryItem, PromptBuilder, PromptConfig
from sidcore.decoder.tokenizer import load_tokenizer
from sidcore.decoder.vocab import SIDVocab


@dataclass(frozen=True)
class DecoderSpec:
    index_version: str
    sizes: tuple[int, ...]
    base: int  # token id of <s1_0>; the SID range is [base, base + sum(sizes) + 1)
    prompt: PromptConfig
    model: str  # "tiny" or the base checkpoint path
    index_fingerprint: str = ""  # quantizer fingerprint of the index it was trained on ("" in decoders older than releases)

    @property
    def vocab(self) -> SIDVocab:
        return SIDVocab(self.sizes, self.base)

    def history_tokens(self, sid: Sequence[int]) -> list[int]:
        """Token ids of a history item's SID (no end token: it is context, not a target)."""
        return self.vocab.sid_tokens(sid)[:-1]

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "sizes": list(self.sizes)}

    @classmethod
    def from_json(cls, d: dict) -> "DecoderSpec":
        return cls(d["index_version"], tuple(d["sizes"]), d["base"], PromptConfig(**d["prompt"]), d["model"], d.get("index_fingerprint", ""))


def make_builder(spec: DecoderSpec, tok: PreTrainedTokenizerFast) -> PromptBuilder:
    encode = lru_cache(maxsize=1 << 18)(lambda text: tuple(tok.encode(text, add_special_tokens=False)))
    markers = dict(zip(MARKERS, tok.convert_tokens_to_ids(list(MARKERS))))
    return PromptBuilder(spec.prompt, lambda text: list(encode(text)), markers)


@dataclass
class Decoder:
    version: str
    spec: DecoderSpec
    model: Qwen3ForCausalLM
    tokenizer: PreTrainedTokenizerFast
    titles: dict[str, str]
    path: Path

    def __post_init__(self) -> None:
        self.builder = make_builder(self.spec, self.tokenizer)

    def prompt_ids(self, query: str | None, history: Sequence[tuple[str, Sequence[int] | None]]) -> list[int]:
        """``history``: (item id, its SID or None if unknown), oldest first."""
        items = [HistoryItem(self.titles.get(item, ""), self.spec.history_tokens(sid) if sid else ()) for item, sid in history]
        return self.builder.build(query, items)


def save_decoder(directory: Path, spec: DecoderSpec, model: Qwen3ForCausalLM, tok: PreTrainedTokenizerFast, titles: dict[str, str]) -> None:
    model.save_pretrained(directory / "model")
    tok.save_pretrained(directory / "tokenizer")
    (directory / "titles.json").write_text(json.dumps(titles))
    (directory / "decoder.json").write_text(json.dumps(spec.to_json(), indent=2))


def load_decoder(store: Store, version: str | None = None, device: str = "cpu") -> Decoder:
    v = store.open(store.resolve("decoder", version), kind="decoder")
    spec = DecoderSpec.from_json(v.json("decoder.json"))
    model = Qwen3ForCausalLM.from_pretrained(str(v.path / "model"), torch_dtype=torch.float32).to(device).eval()
    tok = load_tokenizer(v.path / "tokenizer")
    return Decoder(v.id, spec, model, tok, v.json("titles.json"), v.path)
