"""A decoder version as the engines use it: model, tokenizer, SID token layout, prompt builder,
and what its prompts add to token embeddings (soft query vectors, history items' content).

Store layout of a ``decoder`` version: ``model/`` (transformers save_pretrained, what vLLM loads),
``tokenizer/``, ``titles.json`` (item id -> title, for title-bearing history prompts),
``items.npz`` (the item table: ids, their embeddings and training interactions, the rows
``PromptInputs`` and within-SID ordering address), ``prompt_inputs.safetensors`` (when the prompt adds anything) and
``decoder.json`` (the index version it was trained for and that index's quantizer fingerprint,
SID sizes, the SID token base, the prompt config, the embedder, the length penalty, item
weight and item prior its validation cases chose).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedTokenizerFast, Qwen3ForCausalLM

from model_store import Store
from sidcore.decoder.config import SID_SOFTMAX
from sidcore.decoder.model import PromptInputs, as_float_tensor, embed_inputs, item_outputs, sid_log_probs
from sidcore.decoder.prompt import MARKERS, HistoryItem, Prompt, PromptBuilder, PromptConfig
from sidcore.decoder.tokenizer import load_tokenizer
from sidcore.decoder.vocab import SIDVocab
from sidcore.errors import DataError

ITEMS_FILE = "items.npz"
PROMPT_INPUTS_FILE = "prompt_inputs.safetensors"


@dataclass(frozen=True)
class DecoderSpec:
    index_version: str
    sizes: tuple[int, ...]
    base: int  # token id of <s1_0>; the SID range is [base, base + sum(sizes) + 1)
    prompt: PromptConfig
    model: str  # "tiny" or the base checkpoint path
    index_fingerprint: str = ""  # quantizer fingerprint of the index it was trained on ("" in decoders older than releases)
    embedder: str = ""  # what the item table's vectors are: a MiniLM model name (queries can be embedded too), or "vectors"
    embed_dim: int = 0
    # SID scores are divided by (length + 1) ** this unless a request's engine overrides it:
    # chosen on the decoder's validation cases at training (``TrainConfig.length_penalties``);
    # 0 (plain sums of log-probabilities) in decoders older than that choice.
    length_penalty: float = 0.0
    # What each SID position's distribution is normalised over (``config.SID_SOFTMAX``); ``full`` in
    # decoders older than the choice, which were trained that way.
    sid_softmax: str = "full"
    # A history request's items (and a text request's, under ``item_head_queries``) rank by their
    # SID's score plus this times the decoder's next-item head logit (``Decoder.item_logits``):
    # chosen on the validation cases at training (``TrainConfig.item_weights``); 0 (SID scores
    # alone) in decoders older than that choice.
    item_weight: float = 0.0
    # Whether the next-item head was also trained at text prompts' last position
    # (``TrainConfig.item_loss_queries``), so ``item_weight`` fuses text-only requests too; False in
    # decoders older than that option, whose head only saw history prompts.
    item_head_queries: bool = False
    # The item head's logits are lowered by this times each item's log share of the training
    # interactions (``ItemTable.log_prior``) wherever they rank or propose items: chosen with
    # ``item_weight`` on the validation cases (``TrainConfig.item_priors``); 0 in decoders older
    # than that choice.
    item_prior: float = 0.0

    def __post_init__(self) -> None:
        if self.sid_softmax not in SID_SOFTMAX:
            raise DataError(f"sid_softmax must be one of {', '.join(SID_SOFTMAX)}, got {self.sid_softmax!r}")
        if not 0 <= self.item_weight < float("inf"):
            raise DataError(f"item_weight must be a finite number >= 0, got {self.item_weight}")
        if not 0 <= self.item_prior < float("inf"):
            raise DataError(f"item_prior must be a finite number >= 0, got {self.item_prior}")

    @property
    def vocab(self) -> SIDVocab:
        return SIDVocab(self.sizes, self.base)

    @property
    def embeds_queries(self) -> bool:
        """Whether a query text can be put in the item vectors' space (MiniLM on both sides)."""
        return bool(self.embedder) and self.embedder != "vectors"

    def codes(self, sid: Sequence[int]) -> list[int]:
        """Local ids of a SID's codes (no ``<sid_end>``)."""
        return [self.vocab.local(layer, int(c)) for layer, c in enumerate(sid)]

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "sizes": list(self.sizes)}

    @classmethod
    def from_json(cls, d: dict) -> "DecoderSpec":
        return cls(d["index_version"], tuple(d["sizes"]), d["base"], PromptConfig(**d["prompt"]), d["model"],
                   d.get("index_fingerprint", ""), d.get("embedder", ""), d.get("embed_dim", 0), d.get("length_penalty", 0.0),
                   d.get("sid_softmax", "full"), d.get("item_weight", 0.0),
                   d.get("item_head_queries", False), d.get("item_prior", 0.0))


def make_builder(spec: DecoderSpec, tok: PreTrainedTokenizerFast) -> PromptBuilder:
    encode = lru_cache(maxsize=1 << 18)(lambda text: tuple(tok.encode(text, add_special_tokens=False)))
    markers = dict(zip(MARKERS, tok.convert_tokens_to_ids(list(MARKERS))))
    return PromptBuilder(spec.prompt, lambda text: list(encode(text)), markers, spec.base)


@dataclass
class ItemTable:
    """The items a decoder knows: row per item id, their embeddings (float32 [N, D], or None), for
    ``collab`` item content their collaborative vectors (float32 [N, C], frozen at training), and
    each item's training interactions (float64 [N]; None in decoders older than the item prior)."""

    ids: list[str]
    vectors: np.ndarray | None
    collab: np.ndarray | None = None
    popularity: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.row = {item: i for i, item in enumerate(self.ids)}

    @property
    def collab_dim(self) -> int:
        """Width C of the collaborative vectors ``PromptInputs`` projects, 0 without them."""
        return 0 if self.collab is None else self.collab.shape[1]

    def content(self) -> np.ndarray | None:
        """float32 [N, D + C]: what ``minilm`` item content projects, the collaborative vectors
        appended where the table has them (the similarity order inside a SID reads ``vectors`` alone)."""
        if self.vectors is None or self.collab is None:
            return self.vectors
        return np.concatenate([self.vectors, self.collab], 1)

    @cached_property
    def log_prior(self) -> np.ndarray:
        """float64 [N]: log of each item's share of the training interactions, add-one smoothed
        (zeros without ``popularity``, so an item prior changes nothing)."""
        if self.popularity is None:
            return np.zeros(len(self.ids))
        counts = self.popularity + 1.0
        return np.log(counts / counts.sum())

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        """Int64 rows, -1 for ids the table does not hold (cold-start items)."""
        return np.fromiter((self.row.get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))


@dataclass
class Decoder:
    version: str
    spec: DecoderSpec
    model: Qwen3ForCausalLM
    tokenizer: PreTrainedTokenizerFast
    titles: dict[str, str]
    path: Path
    inputs: PromptInputs
    items: ItemTable

    def __post_init__(self) -> None:
        self.builder = make_builder(self.spec, self.tokenizer)
        self.soft_id = self.tokenizer.convert_tokens_to_ids("<soft>")
        device = next(self.model.parameters()).device
        self._item_vectors = as_float_tensor(self.items.content(), device) if "minilm" in self.spec.prompt.item_content else None

    def history(self, history: Sequence[tuple[str, Sequence[int] | None]]) -> list[HistoryItem]:
        """``history``: (item id, its SID or None if unknown), oldest first."""
        return [HistoryItem(item, self.titles.get(item, ""), self.spec.codes(sid) if sid else ()) for item, sid in history]

    def prompt_ids(self, query: str | None, history: Sequence[tuple[str, Sequence[int] | None]]) -> Prompt:
        """The prompt of a request (see ``prompt.PromptBuilder.build``)."""
        return self.builder.build(query, self.history(history))

    def query_vectors(self, queries: Sequence[str | None]) -> np.ndarray | None:
        """MiniLM embeddings [R, D] of the queries (zeros where none), when the decoder uses them."""
        if not (self.spec.embeds_queries and any(queries)):
            return None
        from sidcore.embed import embed_queries

        return embed_queries(queries, self.spec.embed_dim)

    def item_outputs(self) -> torch.Tensor:
        """float [N, H]: every item-table row as a history marker carries it (the next-item loss's
        item side, ``model.item_outputs``)."""
        return item_outputs(self.inputs, self._item_vectors)

    @cached_property
    def _served_item_outputs(self) -> torch.Tensor:
        # Computed once per decoder: the table's projection is the costly part of scoring items.
        with torch.inference_mode():
            return self.item_outputs()

    @torch.inference_mode()
    def item_states(self, prompts: Sequence[Prompt], query_vectors: np.ndarray | None) -> torch.Tensor:
        """float [R, H]: each prompt's last hidden state, where the next-item loss trained the
        decoder to say which item comes next (a history prompt ends in the ``<item>`` marker)."""
        embeds, attn = self.prefill(prompts, query_vectors)
        out = self.model.model(inputs_embeds=embeds, attention_mask=attn, position_ids=(attn.cumsum(1) - 1).clamp(min=0))
        return out.last_hidden_state[:, -1]

    @torch.inference_mode()
    def item_logits(self, state: torch.Tensor, item_ids: Sequence[str], prior: float | None = None) -> np.ndarray:
        """float64 [C]: the next-item head's logits of ``item_ids`` given one prompt's state [H]
        (``item_states``), each lowered by ``prior`` (None: ``spec.item_prior``) x its log prior.
        Items the table does not hold (cold-start inserts, which the head never saw) get the mean
        of the others' logits, so the head neither lifts nor sinks them."""
        rows = self.items.rows(item_ids)
        out = np.zeros(len(rows))
        known = rows >= 0
        if known.any():
            out[known] = (self._served_item_outputs[torch.from_numpy(rows[known])] @ state).double().cpu().numpy()
            if prior := self._prior(prior):
                out[known] -= prior * self.items.log_prior[rows[known]]
            out[~known] = out[known].mean()
        return out

    @torch.inference_mode()
    def item_logits_all(self, state: torch.Tensor, prior: float | None = None) -> np.ndarray:
        """float32 [N]: the next-item head's logit of every item-table row given one prompt's state
        [H], lowered by ``prior`` (None: ``spec.item_prior``) x the row's log prior."""
        out = (self._served_item_outputs @ state).float().cpu().numpy()
        if prior := self._prior(prior):  # the default 0 leaves the catalog-wide vector as it is: no copy per request
            out = (out - prior * self.items.log_prior).astype(np.float32)
        return out

    def _prior(self, prior: float | None) -> float:
        return self.spec.item_prior if prior is None else prior

    @torch.inference_mode()
    def sid_scores(self, prompt: Prompt, query_vector: np.ndarray | None, sids: Sequence[Sequence[int]]) -> np.ndarray:
        """float64 [C]: each SID's summed log-probability given one prompt (its codes, then
        ``<sid_end>``), as beam search scores a SID it finishes, before any length penalty: the
        score of a SID the beams did not reach. The prompt is run once; its keys and values serve
        one pass over all C SIDs."""
        if not sids:
            return np.zeros(0)
        vocab, C, P = self.spec.vocab, len(sids), len(prompt)
        longest = max(map(len, sids))
        targets = torch.full((C, longest + 1), vocab.end_local, dtype=torch.long)  # local ids; padding is never read
        for c, sid in enumerate(sids):
            targets[c, : len(sid) + 1] = torch.tensor(vocab.sid_tokens(sid)) - vocab.base
        embeds, _ = self.prefill([prompt], None if query_vector is None else query_vector[None])
        device = embeds.device
        cache = DynamicCache(config=self.model.config)
        first = self.model.model(inputs_embeds=embeds, past_key_values=cache, use_cache=True).last_hidden_state[:, -1]  # [1, H]
        cache.batch_repeat_interleave(C)
        codes = self.model.model.embed_tokens(targets[:, :longest].to(device) + vocab.base)  # [C, longest, H]
        rest = self.model.model(inputs_embeds=codes, past_key_values=cache, use_cache=True,
                                position_ids=torch.arange(P, P + longest, device=device)[None].expand(C, -1)).last_hidden_state
        hidden = torch.cat([first[:, None].expand(C, 1, -1), rest], 1)  # [C, longest + 1, H]
        total = torch.zeros(C, dtype=torch.float64)
        lengths = torch.tensor([len(s) for s in sids])
        for j in range(longest + 1):  # hidden[:, j] predicts SID position j
            layer = j if self.spec.sid_softmax == "layer" else None
            logp = sid_log_probs(self.model, hidden[:, j], vocab, layer).cpu()
            total += torch.where(j <= lengths, logp.gather(1, targets[:, j : j + 1]).squeeze(1), 0).double()
        return total.numpy()

    @torch.inference_mode()
    def prefill(self, prompts: Sequence[Prompt], query_vectors: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings [R, P, H] of the prompts, left-padded to the longest, and their
        attention mask [R, P] (1 on real positions)."""
        device = next(self.model.parameters()).device
        P = max(map(len, prompts))
        ids = torch.full((len(prompts), P), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(prompts), P), dtype=torch.long)
        content = torch.full((len(prompts), P), -1, dtype=torch.long)
        for r, p in enumerate(prompts):
            at = P - len(p)
            ids[r, at:] = torch.tensor(p.ids)
            attn[r, at:] = 1
            if p.content:
                positions, rows = zip(*((at + pos, self.items.row.get(item, -1)) for pos, item in p.content))
                content[r, list(positions)] = torch.tensor(rows)
        qv = as_float_tensor(query_vectors, device)
        embeds = embed_inputs(self.model, self.inputs, ids.to(device), self.soft_id, qv, content.to(device), self._item_vectors)
        return embeds, attn.to(device)


def save_decoder(directory: Path, spec: DecoderSpec, model: Qwen3ForCausalLM, tok: PreTrainedTokenizerFast, titles: dict[str, str],
                 inputs: PromptInputs, items: ItemTable) -> None:
    model.save_pretrained(directory / "model")
    tok.save_pretrained(directory / "tokenizer")
    (directory / "titles.json").write_text(json.dumps(titles))
    vectors = items.vectors.astype(np.float16) if items.vectors is not None else np.zeros((len(items.ids), 0), dtype=np.float16)
    extra = {} if items.collab is None else {"collab": items.collab.astype(np.float16)}
    if items.popularity is not None:
        extra["popularity"] = np.asarray(items.popularity, dtype=np.float64)
    np.savez(directory / ITEMS_FILE, ids=np.asarray(items.ids), vectors=vectors, **extra)
    if not inputs.empty:
        inputs.save(directory / PROMPT_INPUTS_FILE)
    (directory / "decoder.json").write_text(json.dumps(spec.to_json(), indent=2))


def load_decoder(store: Store, version: str | None = None, device: str = "cpu") -> Decoder:
    v = store.open(store.resolve("decoder", version), kind="decoder")
    spec = DecoderSpec.from_json(v.json("decoder.json"))
    model = Qwen3ForCausalLM.from_pretrained(str(v.path / "model"), torch_dtype=torch.float32).to(device).eval()
    tok = load_tokenizer(v.path / "tokenizer")
    with np.load(v.file(ITEMS_FILE), allow_pickle=False) as z:
        ids, vectors = z["ids"].tolist(), z["vectors"]
        collab = z["collab"].astype(np.float32) if "collab" in z.files else None
        popularity = z["popularity"] if "popularity" in z.files else None
    items = ItemTable(ids, vectors.astype(np.float32) if vectors.shape[1] else None, collab, popularity)
    inputs = PromptInputs(model.config.hidden_size, spec.embed_dim, spec.prompt.soft_vectors, spec.prompt.item_content, len(ids),
                          items.collab_dim)
    if not inputs.empty:
        inputs.load(v.file(PROMPT_INPUTS_FILE))
    return Decoder(v.id, spec, model, tok, v.json("titles.json"), v.path, inputs.to(device).eval(), items)
