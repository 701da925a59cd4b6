"""From ranked SIDs to ranked items: the last step of every retrieval, online and offline."""

from __future__ import annotations

from dataclasses import dataclass

from service.engines.base import Hit
from service.index.trie import Trie


@dataclass(frozen=True)
class ItemHit:
    item_id: str
    score: float  # the score of the SID the item came from
    sid: tuple[int, ...]


def rank_items(hits: list[Hit], trie: Trie, k: int) -> list[ItemHit]:
    """Items of the SIDs in score order, each SID's items most popular first, cut at ``k``.

    SIDs outside the index (unconstrained decoding) contribute nothing.
    """
    out: list[ItemHit] = []
    for hit in hits:
        if hit.node < 0:
            continue
        for item in trie.items_of(hit.node):
            out.append(ItemHit(item, hit.score, hit.sid))
            if len(out) == k:
                return out
    return out
