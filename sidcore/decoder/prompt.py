"""The one prompt layout shared by training, evaluation and the service.

    [<query> <soft>*S query tokens] [<history> (<item> title tokens SID codes)* newest last] <item>

then the decoder emits the next item's SID codes and ``<sid_end>``. The trailing ``<item>`` says
"the next item starts here": in a training row, a user's whole history is one sequence

    <history> <item> a1 a2 a3 <item> b1 b2 <item> c1 c2 c3

and every item but the first is a target (the ``<item>`` before it predicts its first code, each
code the next one, the last code ``<sid_end>``), so one forward pass trains every next-item
prediction of the sequence, as SASRec does; a serving prompt is such a sequence cut before a
target. Each ``<item>`` marker carries the *previous* item's content (its MiniLM embedding,
projected, and/or a learned item embedding) added to its input embedding, so no target's content
leaks into its own codes. The ``<soft>`` slots carry the query's MiniLM embedding, projected to
``soft_vectors`` input vectors: what MiniLM already knows about the text, beside its tokens.

Segments are tokenised separately and joined as ids, so a title can never run into a marker.
Caps keep the prompt short: the query to ``query_tokens``, the history to the newest
``history_items`` items, each title to ``title_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

MARKERS = ("<query>", "<soft>", "<history>", "<item>")
CONTENT = ("none", "minilm", "id", "minilm+id", "minilm+collab+id")


@dataclass(frozen=True)
class PromptConfig:
    """How much of a request goes into the prompt, and in which form.

    Args:
        history_items: newest history items kept (in prompts and training rows).
        history_mode: what stands for a history item: its title, its SID codes, or both. SIDs
            alone keep prompts ~3x shorter, and cold-start items have one from the moment they
            are inserted.
        title_tokens: tokens kept of each history title.
        query_tokens: tokens kept of the query (0: the query enters through ``soft_vectors`` only).
        soft_vectors: input vectors the query's MiniLM embedding is projected to (0: none). 8 since
            stop 40: on scifact's validation claims and nested dev split, 8 was ahead of 4 at 100
            at both seeds and at 10 on most of them (docs/evaluation.md).
        item_content: what each history item adds at the marker after it: its projected MiniLM
            embedding (``minilm``), a learned per-item embedding (``id``), both, or ``none``.
            ``minilm+collab+id`` also projects the item's collaborative vectors (``indexer.collab``'s
            three views over the training sequences, frozen) with its MiniLM embedding: what users'
            histories say about the item, which the next-item head then scores items by too.
    """

    history_items: int = 20
    history_mode: Literal["title+sid", "title", "sid"] = "sid"
    title_tokens: int = 8
    query_tokens: int = 0
    soft_vectors: int = 8
    item_content: Literal["none", "minilm", "id", "minilm+id", "minilm+collab+id"] = "minilm+id"

    def __post_init__(self) -> None:
        if self.history_mode not in ("title+sid", "title", "sid"):
            raise ValueError(f"history_mode must be title+sid, title or sid, got {self.history_mode!r}")
        if self.item_content not in CONTENT:
            raise ValueError(f"item_content must be one of {', '.join(CONTENT)}, got {self.item_content!r}")
        if min(self.history_items, self.title_tokens) < 1 or min(self.query_tokens, self.soft_vectors) < 0:
            raise ValueError("prompt caps must be positive (query_tokens and soft_vectors may be 0)")
        if self.query_tokens == 0 and self.soft_vectors == 0:
            raise ValueError("a query needs query_tokens or soft_vectors")


@dataclass(frozen=True)
class HistoryItem:
    item_id: str
    title: str
    codes: Sequence[int]  # local ids of the item's SID codes (no <sid_end>); empty if unknown


@dataclass(frozen=True, eq=False)
class Prompt:
    """Token ids plus what the decoder adds at some positions (see ``decoder.model.embed_inputs``).

    ``content``: per position, the item id whose content the ``<item>`` marker there carries.
    The ``<soft>`` slots are found by token id; their vectors come from the query's embedding
    (``query_vector``, float [D], when the caller has computed it already).
    """

    ids: tuple[int, ...]
    content: tuple[tuple[int, str], ...] = ()
    query: str | None = None
    query_vector: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


def as_prompt(p: "Prompt | Sequence[int]") -> Prompt:
    """A Prompt as it is, or plain token ids as a Prompt without additions."""
    return p if isinstance(p, Prompt) else Prompt(tuple(int(t) for t in p))


class PromptBuilder:
    """Builds prompts (serving) and whole-sequence rows (training) in one layout.

    ``encode`` is the text tokenizer (no special tokens added); ``marker_ids`` the ids of MARKERS;
    ``base`` the token id of local SID id 0.
    """

    def __init__(self, cfg: PromptConfig, encode: Callable[[str], list[int]], marker_ids: dict[str, int], base: int):
        self.cfg = cfg
        self.encode = encode
        self.ids = marker_ids
        self.base = base

    def _query(self, query: str | None) -> list[int]:
        if not query:
            return []
        out = [self.ids["<query>"]] + [self.ids["<soft>"]] * self.cfg.soft_vectors
        return out + self.encode(query)[: self.cfg.query_tokens]

    def _item(self, item: HistoryItem) -> list[int]:
        out = [self.ids["<item>"]]
        if self.cfg.history_mode != "sid":
            out += self.encode(item.title)[: self.cfg.title_tokens]
        if self.cfg.history_mode != "title":
            out += [self.base + c for c in item.codes]
        return out

    def build(self, query: str | None, history: Sequence[HistoryItem]) -> Prompt:
        """The prompt of a request: the decoder continues it with the next item's SID codes."""
        ids = self._query(query)
        content: list[tuple[int, str]] = []
        history = list(history)[-self.cfg.history_items :]
        if history:
            ids.append(self.ids["<history>"])
            for t, item in enumerate(history):
                if t:
                    content.append((len(ids), history[t - 1].item_id))
                ids += self._item(item)
            content.append((len(ids), history[-1].item_id))
        ids.append(self.ids["<item>"])
        return Prompt(tuple(ids), tuple(content), query)

    def sequence(self, history: Sequence[HistoryItem], query: str | None = None, end: int = -1) -> tuple[Prompt, list[int]]:
        """A training row: the whole ``history`` (newest ``history_items``) with every item but the
        first as a target. Returns the row and one label per position: the local id it predicts,
        or -1. ``end`` is the local id of ``<sid_end>``."""
        history = list(history)[-self.cfg.history_items :]
        ids = self._query(query) + [self.ids["<history>"]]
        labels = [-1] * len(ids)
        content: list[tuple[int, str]] = []
        for t, item in enumerate(history):
            if t:
                content.append((len(ids), history[t - 1].item_id))
            tokens = self._item(item)
            row = [-1] * len(tokens)
            if t and self.cfg.history_mode != "title" and item.codes:
                first = len(tokens) - len(item.codes) - 1  # the position before the first code predicts it
                for j, c in enumerate(item.codes):
                    row[first + j] = c
                row[-1] = end
            ids += tokens
            labels += row
        return Prompt(tuple(ids), tuple(content), query), labels

    def example(self, query: str | None, history: Sequence[HistoryItem], target: Sequence[int], end: int) -> tuple[Prompt, list[int]]:
        """A training row for one target after a request's prompt (a text query, or a history
        cut anywhere): the prompt, the target's codes, and labels on them."""
        prompt = self.build(query, history)
        ids = list(prompt.ids) + [self.base + c for c in target]
        labels = [-1] * (len(prompt.ids) - 1) + list(target) + [end]
        return Prompt(tuple(ids), prompt.content, query), labels


def max_prompt_tokens(cfg: PromptConfig, num_layers: int) -> int:
    """The longest prompt ``PromptBuilder.build`` makes under ``cfg`` for SIDs of ``num_layers`` codes."""
    per_item = 1 + (cfg.title_tokens if cfg.history_mode != "sid" else 0) + (num_layers if cfg.history_mode != "title" else 0)
    return (1 + cfg.soft_vectors + cfg.query_tokens) + (1 + cfg.history_items * per_item) + 1
