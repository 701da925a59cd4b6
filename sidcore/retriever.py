"""One retrieval pipeline, shared by the service and offline evaluation: request → prompt → SIDs → items.

Everything a request touches comes from one index snapshot: its history items' SIDs, the decode
mask, the item attributes its filter reads and the SID → items lookup, and the answer names that
snapshot's version. A version flip, a cold-start insert or an attribute update in the middle of a
batch therefore can never mix two states in one answer.

Items sharing a SID are ordered by the request (``within="similarity"``): by cosine between each
item's embedding and the request's (its query's MiniLM embedding, and/or the mean embedding of its
history), so a tail item that shares a SID with popular ones still comes first when it is the one
the request is about; ``within="popularity"`` keeps the index's popularity order.

A decoder trained with the next-item loss also says which *item* comes next: its state at a
history prompt's last ``<item>`` marker against each item (``Decoder.item_logits``); one trained
with it on text prompts too (``item_loss_queries``) says so at a text prompt's last position. With
an ``item_weight`` W > 0 (by default the decoder's own, chosen on its validation cases) the items
of such a request's decoded SIDs are ranked by SID score + W x that logit: the two views of the
next item, the code path and the item, as a product of experts. The candidates are the items of
the decoded SIDs, of ``FUSED_BEAMS_PER_ITEM`` x k beams by default, and, under
``head_proposals_per_item``, of the SIDs of the head's own best items that the beams missed, each
such SID scored by the decoder as a beam would be (``Decoder.sid_scores``).

Exclusions and filters act inside the decode: a request's ``ItemMask`` (its history unless
``exclude_history`` is off, its ``exclude_ids``, its ``filter``) prunes every SID left with no item
it may return, so the beams go to SIDs it can use and k items come back whenever the index holds
them. Filter masks are cached per (snapshot, filter): a repeated filter costs nothing; exclusions
are applied on top per request, at a cost proportional to their number.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from sidcore.cache import Recent
from sidcore.decoder.bundle import Decoder
from sidcore.decoder.prompt import Prompt
from sidcore.engines.base import DecodeStats, Engine, Hit
from sidcore.engines.beam import penalised
from sidcore.errors import DataError, UnavailableError
from sidcore.index.attributes import Filter
from sidcore.index.item_mask import ItemMask
from sidcore.index.mask import TrieMask
from sidcore.index.snapshot import IndexSnapshot, as_snapshot
from sidcore.index.trie import Trie
from sidcore.sid import SID

# Beams per requested item for a request the item head re-ranks (up to ``max_beam_width``). A
# request for k items otherwise decodes about k SIDs, so the head could only reorder the k items it
# was given; with more it chooses them. Scifact's selection claims, Recall@100: 0.925 at 2k beams
# against 0.905 at k (stop 51); 0.930 / 0.934 at 4k against 0.928 / 0.927 at 2k (two seeds, stop 54),
# games level, at ~1.3x the latency of a k = 10 request.
FUSED_BEAMS_PER_ITEM = 4
# Items the item head proposes per requested item, beside the beams, for a request it re-ranks:
# the head's best items whose SIDs the beams missed join the candidates, each SID scored by the
# decoder as the beams score theirs (``Decoder.sid_scores``). 0: the beams' items alone.
HEAD_PROPOSALS_PER_ITEM = 1


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
    """One retrieval request. ``history`` is item ids, oldest first; ``beam_width`` None = default.

    The answer leaves out the history's items (unless ``exclude_history`` is False), the items of
    ``exclude_ids`` (ids the index does not hold are ignored) and items ``filter`` does not keep.
    """

    query: str | None = None
    history: tuple[str, ...] = ()
    k: int = 10
    beam_width: int | None = None
    exclude_history: bool = True
    exclude_ids: tuple[str, ...] = ()
    filter: Filter | None = None

    def __post_init__(self) -> None:
        if not self.query and not self.history:
            raise ValueError("a query needs a text query, a history, or both")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@dataclass(frozen=True)
class ItemHit:
    item_id: str
    score: float  # what ranked it: its SID's score, plus item_weight x its item-head logit when fused
    sid: SID


@dataclass(frozen=True)
class Result:
    items: list[ItemHit]
    sids: list[Hit]  # the SIDs the beams decoded, best first, before the cut at k items (not the head's proposals)
    index_version: str
    beam_width: int
    reason: str | None = None  # why fewer than k items came back, when exclusions or a filter explain it


@dataclass
class BatchStats:
    """What a batch cost: one DecodeStats per group of requests decoded together."""

    groups: list[DecodeStats] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return sum(g.steps for g in self.groups)


@dataclass
class Decoded:
    """A batch decoded under one snapshot, its items not yet ranked (``Retriever.decode``); lists
    are per request."""

    trie: Trie
    queries: list[Query]
    hits: list[list[Hit] | None]  # the decoded SIDs, best first; None where exclusions and filter left no item
    widths: list[int]  # the beam width each request was planned with
    item_masks: list[ItemMask | None]
    orders: list[np.ndarray | None]  # the unit vector each request's SIDs order their items by, or None
    states: dict[int, torch.Tensor]  # [H] item-head states of the requests the head re-ranks, by position
    proposed: dict[int, list[Hit]] = field(default_factory=dict)  # SIDs the head proposed beyond the beams, by position
    stats: BatchStats = field(default_factory=BatchStats)


class FilterCache:
    """Item masks of filters on the latest snapshot, least recently used evicted first, within
    ``max_bytes`` (a mask costs ~ items + moves + 16 x nodes bytes: ~14 MB on a 1M-item trie).

    Entries belong to one snapshot: the first lookup on another snapshot (an insert or an
    attribute update arrived) starts afresh, since a filter's items may have changed.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._owner: weakref.ref | None = None
        self._entries: OrderedDict[str, ItemMask] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def get(self, snap: IndexSnapshot, flt: Filter, build) -> ItemMask:
        key = flt.canonical
        with self._lock:
            if self._owner is None or self._owner() is not snap:
                self._owner, self._bytes = weakref.ref(snap), 0
                self._entries.clear()
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit
            self.misses += 1
        made = build()  # outside the lock: tens of ms on a large trie
        with self._lock:
            if self._owner() is snap and key not in self._entries:
                self._entries[key] = made
                self._bytes += made.nbytes
                while self._bytes > self.max_bytes and len(self._entries) > 1:
                    self._bytes -= self._entries.popitem(last=False)[1].nbytes
        return made


class Retriever:
    """Query → ranked items for one decoder and engine, over whichever index snapshot it is handed
    (an ``IndexSnapshot``, or a bare ``Trie``: an index without attributes).

    Args:
        decoder: the decoder version served (its SID layout must match the trie's).
        engine: the torch or vLLM engine built on ``decoder``.
        beam_width: beams when a request does not say; a request for more than ``beam_width``
            items gets ``min(k, max_beam_width)`` beams, since k SIDs hold at least k items
            (``fused_beams_per_item`` x k for a request the item head re-ranks).
        max_beam_width: the widest beam a request may ask for.
        fused_beams_per_item: beams per requested item for a request the item head re-ranks
            (up to ``max_beam_width``): its candidates, of which the head picks k. More reach
            further down the SID ranking at a proportional decode cost.
        head_proposals_per_item: for such a request, also the items of the SIDs of the head's
            best ``head_proposals_per_item`` x k items that the beams missed, each SID scored by
            the decoder as a beam would be (one extra forward pass over those SIDs); 0: none.
        filter_cache_bytes: memory for cached filter masks (see ``FilterCache``).
        within: order of the items sharing a SID: ``similarity`` to the request (when the decoder
            has item embeddings), or ``popularity``.
        item_weight: history requests (text requests too, under ``DecoderSpec.item_head_queries``)
            rank their decoded SIDs' items by SID score plus this times the decoder's item-head
            logit (0: SID scores alone); None: the decoder's own (``DecoderSpec.item_weight``).
        item_prior: the item head's logits, where they rank and propose items, are lowered by
            this times each item's log share of the training interactions (``ItemTable.log_prior``),
            so the head's lift over popularity counts; None: the decoder's own (``DecoderSpec.item_prior``).
    """

    def __init__(self, decoder: Decoder, engine: Engine, beam_width: int = 20, max_beam_width: int = 128,
                 filter_cache_bytes: int = 256 << 20, within: Literal["similarity", "popularity"] = "similarity",
                 item_weight: float | None = None, fused_beams_per_item: int = FUSED_BEAMS_PER_ITEM,
                 head_proposals_per_item: int = HEAD_PROPOSALS_PER_ITEM, item_prior: float | None = None):
        if fused_beams_per_item < 1:
            raise ValueError(f"fused_beams_per_item must be >= 1, got {fused_beams_per_item}")
        if head_proposals_per_item < 0:
            raise ValueError(f"head_proposals_per_item must be >= 0, got {head_proposals_per_item}")
        if within not in ("similarity", "popularity"):
            raise ValueError(f"within must be similarity or popularity, got {within!r}")
        self.item_weight = decoder.spec.item_weight if item_weight is None else item_weight
        if not 0 <= self.item_weight < float("inf"):
            raise ValueError(f"item_weight must be a finite number >= 0, got {self.item_weight}")
        self.item_prior = decoder.spec.item_prior if item_prior is None else item_prior
        if not 0 <= self.item_prior < float("inf"):
            raise ValueError(f"item_prior must be a finite number >= 0, got {self.item_prior}")
        if self.item_prior and decoder.items.popularity is None:
            raise ValueError(f"decoder {decoder.version} has no interaction counts (trained before the item prior): item_prior must be 0")
        if self.item_weight and decoder.inputs.empty:
            raise ValueError(f"decoder {decoder.version} has no item content, so no item head: item_weight must be 0")
        self.decoder = decoder
        self.engine = engine
        self.beam_width = beam_width
        self.max_beam_width = max_beam_width
        self.fused_beams_per_item = fused_beams_per_item
        self.head_proposals_per_item = head_proposals_per_item
        self.by_similarity = within == "similarity" and decoder.items.vectors is not None
        self._masks: Recent[Trie, TrieMask] = Recent()
        self._everything: Recent[Trie, ItemMask] = Recent()
        self._trie_rows: Recent[Trie, np.ndarray] = Recent()
        self.filters = FilterCache(filter_cache_bytes)

    def check(self, trie: Trie) -> None:
        if tuple(trie.sizes) != tuple(self.decoder.spec.sizes):
            raise IndexMismatch(
                f"index {trie.version} has codebook sizes {list(trie.sizes)}, but decoder {self.decoder.version} was trained "
                f"for {list(self.decoder.spec.sizes)} (index {self.decoder.spec.index_version}): publish a matching decoder"
            )

    def mask(self, trie: Trie) -> TrieMask:
        """The decode mask of a snapshot, built once per snapshot."""

        def build(t: Trie) -> TrieMask:
            self.check(t)
            return TrieMask(t, self.decoder.spec.vocab)

        return self._masks.get(trie, build)

    def plan(self, q: Query) -> tuple[int, int]:
        """(beam width, SIDs to finish) for a request; the core's one check of the beam width. A
        request whose items the item head re-ranks finishes every beam, its candidates, and by
        default asks for ``fused_beams_per_item`` x k of them, so the head has more than k items
        to choose from."""
        fused = self.fuses(q)
        width = q.beam_width or max(self.beam_width, min((self.fused_beams_per_item if fused else 1) * q.k, self.max_beam_width))
        if not 1 <= width <= self.max_beam_width:
            raise DataError(f"beam_width must be in [1, {self.max_beam_width}], got {width}")
        return width, width if fused else min(q.k, width)

    def fuses(self, q: Query) -> bool:
        """Whether ``q``'s items are ranked by SID score and the item head together: under a
        positive ``item_weight``, a history request, or any request where the head was also
        trained on text prompts (``DecoderSpec.item_head_queries``)."""
        return bool(self.item_weight and (q.history or self.decoder.spec.item_head_queries))

    @staticmethod
    def history_rows(trie: Trie, q: Query) -> np.ndarray:
        """Int64 item rows of the history; UnknownItems naming the positions of ids the index lacks."""
        rows = trie.rows_of(q.history)
        unknown = np.flatnonzero(rows < 0).tolist()
        if unknown:
            raise UnknownItems(unknown, [q.history[i] for i in unknown], trie.version)
        return rows

    def prompt(self, trie: Trie, q: Query, query_vector: np.ndarray | None = None) -> Prompt:
        nodes = trie.item_node[self.history_rows(trie, q)].tolist()
        prompt = self.decoder.prompt_ids(q.query, [(item, trie.sid_of(n)) for item, n in zip(q.history, nodes)])
        return prompt if query_vector is None else dataclasses.replace(prompt, query_vector=query_vector)

    def query_vectors(self, queries: list[Query]) -> np.ndarray | None:
        """MiniLM embeddings [R, D] of the requests' texts (zeros where none), when the decoder's
        prompts or the within-SID order use them; None otherwise. One batch per retrieve call."""
        if not (self.decoder.spec.prompt.soft_vectors or self.by_similarity):
            return None
        return self.decoder.query_vectors([q.query for q in queries])

    def request_vector(self, q: Query, query_vector: np.ndarray | None) -> np.ndarray | None:
        """Unit vector a request's items are ordered by: its query's embedding plus the mean of its
        history items' embeddings (each part normalised), or None when it has neither."""
        parts = []
        if query_vector is not None and q.query:
            parts.append(query_vector)
        if q.history:
            rows = self.decoder.items.rows(q.history)
            if (rows >= 0).any():
                parts.append(self.decoder.items.vectors[rows[rows >= 0]].mean(0))
        parts = [p / n for p in parts if (n := float(np.linalg.norm(p))) > 0]
        if not parts:
            return None
        v = np.sum(parts, axis=0)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def validate(self, index: Trie | IndexSnapshot, q: Query) -> None:
        """Everything about ``q`` that can fail, checked against ``index`` without decoding:
        the layout, the history's ids, the beam width and the filter (FilterError naming its part)."""
        snap = as_snapshot(index)
        self.check(snap.trie)
        self.prompt(snap.trie, q)
        self.plan(q)
        if q.filter:
            snap.attributes.check(q.filter)

    def item_mask(self, index: Trie | IndexSnapshot, q: Query) -> ItemMask | None:
        """The items ``q`` may return, None when it may return any."""
        snap = as_snapshot(index)
        trie = snap.trie
        out = []
        if q.exclude_history and q.history:
            out.append(self.history_rows(trie, q))
        if q.exclude_ids:
            rows = trie.rows_of(q.exclude_ids)
            out.append(rows[rows >= 0])  # ids the index does not hold exclude nothing
        if q.filter:
            snap.attributes.check(q.filter)
            base = self.filters.get(snap, q.filter, lambda: ItemMask.of_rows(self.mask(trie).moves, snap.attributes.evaluate(q.filter)))
        elif out:
            base = self._everything.get(trie, lambda t: ItemMask.everything(self.mask(t).moves))
        else:
            return None
        return base.excluding(np.concatenate(out)) if out else base

    def retrieve(self, index: Trie | IndexSnapshot, queries: list[Query], constrained: bool = True) -> tuple[list[Result], BatchStats]:
        """Decode a batch under one snapshot and rank its items. Requests sharing a plan are decoded
        together; a request whose exclusions and filter leave no item is answered without decoding."""
        decoded = self.decode(index, queries, constrained)
        return self.rank(decoded), decoded.stats

    def decode(self, index: Trie | IndexSnapshot, queries: list[Query], constrained: bool = True) -> Decoded:
        """The first half of ``retrieve``: each request's SIDs, and what ranking their items needs."""
        snap = as_snapshot(index)
        trie = snap.trie
        mask = self.mask(trie)
        qv = self.query_vectors(queries)
        prompts = [self.prompt(trie, q, None if qv is None else qv[i]) for i, q in enumerate(queries)]
        item_masks = [self.item_mask(snap, q) for q in queries]
        fused = [i for i, q in enumerate(queries) if self.fuses(q)]
        states = dict(zip(fused, self.decoder.item_states([prompts[i] for i in fused], None if qv is None else qv[fused]))) if fused else {}
        orders = [self.request_vector(q, None if qv is None else qv[i]) if self.by_similarity else None for i, q in enumerate(queries)]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(self.plan(q), []).append(i)
        out = Decoded(trie, queries, [None] * len(queries), [0] * len(queries), item_masks, orders, states)
        for (width, num_sids), members in groups.items():
            for i in members:
                out.widths[i] = width
            todo = [i for i in members if item_masks[i] is None or not item_masks[i].empty]
            if not todo:
                continue
            hits, st = self.engine.decode([prompts[i] for i in todo], width, num_sids, constrained, mask=mask,
                                          item_masks=[item_masks[i] for i in todo])
            out.stats.groups.append(st)
            for i, h in zip(todo, hits):
                out.hits[i] = h
        if self.head_proposals_per_item and constrained:  # unconstrained decoding is a probe of the beams alone
            for i in states:
                if out.hits[i] is not None:
                    out.proposed[i] = self.propose(trie, queries[i], prompts[i], states[i], out.hits[i], item_masks[i])
        return out

    def propose(self, trie: Trie, q: Query, prompt: Prompt, state: torch.Tensor, hits: list[Hit],
                item_mask: ItemMask | None) -> list[Hit]:
        """SIDs of the head's best ``head_proposals_per_item`` x k items (of those ``q`` may return)
        that ``hits`` lack, best SID score first, each scored by the decoder as the beams score
        theirs (summed log-probabilities under the engine's length penalty)."""
        rows = self._trie_rows.get(trie, lambda t: t.rows_of(self.decoder.items.ids))  # decoder item row -> trie row (-1: gone)
        logits = self.decoder.item_logits_all(state, self.item_prior)
        have = {h.node for h in hits}
        wanted, nodes = self.head_proposals_per_item * q.k, []
        for at in _best_first(logits, 4 * wanted + len(q.history) + len(q.exclude_ids)):
            row = rows[at]
            if row < 0 or (item_mask is not None and not item_mask.allows(np.array([row]))[0]):
                continue
            node = int(trie.item_node[row])
            if node not in have:
                have.add(node)
                nodes.append(node)
            wanted -= 1
            if not wanted:
                break
        sids = [trie.sid_of(n) for n in nodes]
        scores = penalised(self.decoder.sid_scores(prompt, prompt.query_vector, sids), np.array([len(s) for s in sids]),
                           self.engine.length_penalty)
        return sorted((Hit(s, float(v), n) for s, v, n in zip(sids, scores, nodes)), key=lambda h: -h.score)

    def rank(self, decoded: Decoded, item_weight: float | None = None) -> list[Result]:
        """The second half of ``retrieve``: each request's items from its decoded SIDs. A request
        the item head re-ranks is ranked with ``item_weight`` (None: this retriever's), so one
        decode serves every weight that plans the same beams: what choosing a weight on
        validation cases needs."""
        trie, results = decoded.trie, []
        for i, q in enumerate(decoded.queries):
            hits, item_mask = decoded.hits[i], decoded.item_masks[i]
            items = [] if hits is None else self.items(hits + decoded.proposed.get(i, []), trie, q.k, item_mask, decoded.orders[i],
                                                       decoded.states.get(i), item_weight)
            reason = _shortfall(item_mask, q.k, trie.version) if len(items) < q.k else None
            results.append(Result(items, hits or [], trie.version, decoded.widths[i], reason))
        return results

    def items(self, hits: list[Hit], trie: Trie, k: int, item_mask: ItemMask | None = None, by: np.ndarray | None = None,
              state: torch.Tensor | None = None, item_weight: float | None = None) -> list[ItemHit]:
        """Items of the SIDs in score order, cut at ``k``; each SID's items most similar to ``by``
        first (a unit vector in the decoder's item space; items it has no embedding of come last),
        or most popular first without it. With an ``item_mask``, only the items it keeps. With a
        prompt ``state`` [H] (``Decoder.item_states``), every SID's items are ranked together by
        SID score + ``item_weight`` (None: this retriever's) x item-head logit, that order breaking ties.

        SIDs outside the index (unconstrained decoding) contribute nothing.
        """
        out: list[ItemHit] = []
        for hit in hits:
            if hit.node < 0:
                continue
            members = trie.items_of(hit.node) if item_mask is None else item_mask.items(trie, hit.node)
            if by is not None and len(members) > 1:
                members = self._by_similarity(members, by)
            for item in members:
                out.append(ItemHit(item, hit.score, hit.sid))
                if len(out) == k and state is None:
                    return out
        if state is None or not out:
            return out
        weight = self.item_weight if item_weight is None else item_weight
        score = np.array([h.score for h in out]) + weight * self.decoder.item_logits(state, [h.item_id for h in out], self.item_prior)
        return [dataclasses.replace(out[i], score=float(score[i])) for i in np.argsort(-score, kind="stable")[:k]]

    def _by_similarity(self, members: list[str], by: np.ndarray) -> list[str]:
        rows = self.decoder.items.rows(members)
        sim = np.full(len(members), -np.inf)
        known = rows >= 0
        sim[known] = self.decoder.items.vectors[rows[known]] @ by
        return [members[i] for i in np.argsort(-sim, kind="stable")]


def _best_first(scores: np.ndarray, likely: int):
    """Indices of ``scores`` [N] from the highest, sorting only the ``likely`` best unless the
    caller reads past them (a filter that keeps few items): one partition of a large catalog."""
    if likely >= len(scores):
        yield from np.argsort(-scores, kind="stable")
        return
    top = np.argpartition(-scores, likely)[:likely]
    yield from top[np.argsort(-scores[top], kind="stable")]
    rest = np.ones(len(scores), bool)
    rest[top] = False
    rest = np.flatnonzero(rest)
    yield from rest[np.argsort(-scores[rest], kind="stable")]


def _shortfall(item_mask: ItemMask | None, k: int, version: str) -> str | None:
    """Why an answer holds fewer than k items, when the request's exclusions and filter explain it."""
    if item_mask is None:
        return None
    left = item_mask.num_rows
    if left == 0:
        return f"no item of index {version} passes the filter and exclusions"
    return f"only {left} item(s) of index {version} pass the filter and exclusions" if left < k else None
