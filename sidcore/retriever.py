"""One retrieval pipeline, shared by the service and offline evaluation: request → prompt → SIDs → items.

Everything a request touches comes from one trie snapshot: its history items' SIDs, the decode
mask and the SID → items lookup, and the answer names that snapshot's version. A version flip or a
cold-start insert in the middle of a batch therefore can never mix two versions in one answer.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from sidcore.decoder.bundle import Decoder
from sidcore.engines.base import DecodeStats, Engine, Hit
from sidcore.errors import DataError, UnavailableError
from sidcore.index.mask import TrieMask
from sidcore.index.trie import Trie
from sidcore.sid import SID


class UnknownItems(DataError):
    """History ids that the served index does not hold; ``positions`` index the request's history."""

    def __init__(self, positions: list[int], ids: list[str], version: str):
        self.positions, self.ids, self.version = positions, ids, version
        shown = ", ".join(repr(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
        super().__init__(f"{len(ids)} unknown item id(s) in index {version}: {shown}")


class IndexMismatch(UnavailableError):
    """The served index's SID layout is not the one the decoder was trained on."""


@dataclass(frozen=True)
class Query:
    """One retrieval request. ``history`` is item ids, oldest first; ``beam_width`` None = default."""

    query: str | None = None
    history: tuple[str, ...] = ()
    k: int = 10
    beam_width: int | None = None

    def __post_init__(self) -> None:
        if not self.query and not self.history:
            raise ValueError("a query needs a text query, a history, or both")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@dataclass(frozen=True)
class ItemHit:
    item_id: str
    score: float  # the score of the SID the item came from
    sid: SID


@dataclass(frozen=True)
class Result:
    items: list[ItemHit]
    sids: list[Hit]  # the decoded SIDs, best first, before the cut at k items
    index_version: str
    beam_width: int


@dataclass
class BatchStats:
    """What a batch cost: one DecodeStats per group of requests decoded together."""

    groups: list[DecodeStats] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return sum(g.steps for g in self.groups)


class Retriever:
    """Query → ranked items for one decoder and engine, over whichever trie snapshot it is handed.

    Args:
        decoder: the decoder version served (its SID layout must match the trie's).
        engine: the torch or vLLM engine built on ``decoder``.
        beam_width: beams when a request does not say; a request for more than ``beam_width``
            items gets ``min(k, max_beam_width)`` beams, since k SIDs hold at least k items.
        max_beam_width: the widest beam a request may ask for.
    """

    def __init__(self, decoder: Decoder, engine: Engine, beam_width: int = 20, max_beam_width: int = 128):
        self.decoder = decoder
        self.engine = engine
        self.beam_width = beam_width
        self.max_beam_width = max_beam_width
        self._masks: weakref.WeakKeyDictionary[Trie, TrieMask] = weakref.WeakKeyDictionary()

    def check(self, trie: Trie) -> None:
        if tuple(trie.sizes) != tuple(self.decoder.spec.sizes):
            raise IndexMismatch(
                f"index {trie.version} has codebook sizes {list(trie.sizes)}, but decoder {self.decoder.version} was trained "
                f"for {list(self.decoder.spec.sizes)} (index {self.decoder.spec.index_version}): publish a matching decoder"
            )

    def mask(self, trie: Trie) -> TrieMask:
        """The decode mask of a snapshot, built once per snapshot."""
        m = self._masks.get(trie)
        if m is None:
            self.check(trie)
            m = self._masks[trie] = TrieMask(trie, self.decoder.spec.vocab)
        return m

    def plan(self, q: Query) -> tuple[int, int]:
        """(beam width, SIDs to finish) for a request; the core's one check of the beam width."""
        width = q.beam_width or max(self.beam_width, min(q.k, self.max_beam_width))
        if not 1 <= width <= self.max_beam_width:
            raise DataError(f"beam_width must be in [1, {self.max_beam_width}], got {width}")
        return width, min(q.k, width)

    def prompt(self, trie: Trie, q: Query) -> list[int]:
        nodes = [trie.node_of_item(item) for item in q.history]
        unknown = [i for i, n in enumerate(nodes) if n < 0]
        if unknown:
            raise UnknownItems(unknown, [q.history[i] for i in unknown], trie.version)
        return self.decoder.prompt_ids(q.query, [(item, trie.sid_of(n)) for item, n in zip(q.history, nodes)])

    def retrieve(self, trie: Trie, queries: list[Query], constrained: bool = True) -> tuple[list[Result], BatchStats]:
        """Decode a batch under one snapshot. Requests sharing a plan are decoded together."""
        mask = self.mask(trie)
        prompts = [self.prompt(trie, q) for q in queries]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(self.plan(q), []).append(i)
        results: list[Result | None] = [None] * len(queries)
        stats = BatchStats()
        for (width, num_sids), members in groups.items():
            hits, st = self.engine.decode([prompts[i] for i in members], width, num_sids, constrained, mask=mask)
            stats.groups.append(st)
            for i, h in zip(members, hits):
                results[i] = Result(self.items(h, trie, queries[i].k), h, trie.version, width)
        return results, stats  # type: ignore[return-value]

    @staticmethod
    def items(hits: list[Hit], trie: Trie, k: int) -> list[ItemHit]:
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
