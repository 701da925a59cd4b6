"""The one prompt template shared by training, evaluation and the service.

    [<query> query tokens] [<history> (<item> title tokens SID tokens)* newest last] <sid_begin>

Segments are tokenised separately and joined as ids, so a title can never run into a marker.
Caps keep the prompt short (it is prefilled once per request): the query to ``query_tokens``,
the history to the newest ``history_items`` items, each title to ``title_tokens``. After
``<sid_begin>`` the decoder emits SID tokens and ``<sid_end>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

MARKERS = ("<query>", "<history>", "<item>", "<sid_begin>")


@dataclass(frozen=True)
class PromptConfig:
    """How much of a request goes into the prompt.

    Args:
        history_items: newest history items kept.
        history_mode: what stands for a history item: its title, its SID tokens, or both. SIDs
            alone keep prompts ~3x shorter, and cold-start items have one from the moment they
            are inserted.
        title_tokens: tokens kept of each history title.
        query_tokens: tokens kept of the query.
    """

    history_items: int = 10
    history_mode: Literal["title+sid", "title", "sid"] = "sid"
    title_tokens: int = 8
    query_tokens: int = 32

    def __post_init__(self) -> None:
        if self.history_mode not in ("title+sid", "title", "sid"):
            raise ValueError(f"history_mode must be title+sid, title or sid, got {self.history_mode!r}")
        if min(self.history_items, self.title_tokens, self.query_tokens) < 1:
            raise ValueError("prompt caps must be positive")


@dataclass(frozen=True)
class HistoryItem:
    title: str
    sid_tokens: Sequence[int]  # token ids of the item's SID (empty if unknown)


class PromptBuilder:
    """Builds prompt token ids; ``encode`` is the text tokenizer (no special tokens added)."""

    def __init__(self, cfg: PromptConfig, encode: Callable[[str], list[int]], marker_ids: dict[str, int]):
        self.cfg = cfg
        self.encode = encode
        self.ids = marker_ids

    def build(self, query: str | None, history: Sequence[HistoryItem]) -> list[int]:
        cfg = self.cfg
        out: list[int] = []
        if query:
            out.append(self.ids["<query>"])
            out.extend(self.encode(query)[: cfg.query_tokens])
        if history:
            out.append(self.ids["<history>"])
            for item in list(history)[-cfg.history_items :]:
                out.append(self.ids["<item>"])
                if cfg.history_mode != "sid":
                    out.extend(self.encode(item.title)[: cfg.title_tokens])
                if cfg.history_mode != "title":
                    out.extend(item.sid_tokens)
        out.append(self.ids["<sid_begin>"])
        return out


def max_prompt_tokens(cfg: PromptConfig, num_layers: int) -> int:
    """The longest prompt ``PromptBuilder.build`` makes under ``cfg`` for SIDs of ``num_layers`` codes."""
    per_item = 1 + (cfg.title_tokens if cfg.history_mode != "sid" else 0) + (num_layers if cfg.history_mode != "title" else 0)
    return (1 + cfg.query_tokens) + (1 + cfg.history_items * per_item) + 1
