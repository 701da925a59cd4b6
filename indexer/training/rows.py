"""Training rows and batches: data -> prompt rows with labels -> padded tensors.

A row is a ``Prompt`` (the serving layout, ``sidcore.decoder.prompt``) and one label per position:
the local SID id the position predicts, or -1. Three kinds of rows make an epoch:
- a user's whole history (newest ``history_items``, a random window of longer ones), every item
  but the first a target;
- a training query and its item, ``query_repeats`` times;
- an item view (its title, a sentence, a span, ...) and the item, once each.
Batches group rows of similar length up to ``batch_tokens`` padded tokens (and ``max_rows``
rows), so a batch of short query rows is as costly as one of long histories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from sidcore.decoder.prompt import HistoryItem, Prompt, PromptBuilder


@dataclass(frozen=True)
class Row:
    prompt: Prompt
    labels: tuple[int, ...]  # per position: the local SID id it predicts, -1 for none
    targets: tuple[tuple[int, str], ...] = ()  # (position predicting a target's first code, item) per target


class RowMaker:
    """Rows in the decoder's prompt layout.

    Args:
        builder: the decoder's prompt builder.
        codes: item id -> local ids of its SID codes.
        titles: item id -> title (for prompts that show history titles).
        end: local id of ``<sid_end>``.
        query_targets: give query and view rows their target too (for the next-item loss); history
            rows always have theirs.
    """

    def __init__(self, builder: PromptBuilder, codes: dict[str, list[int]], titles: dict[str, str], end: int,
                 query_targets: bool = False):
        self.builder, self.codes, self.titles, self.end = builder, codes, titles, end
        self.query_targets = query_targets

    def item(self, item_id: str) -> HistoryItem:
        return HistoryItem(item_id, self.titles.get(item_id, ""), self.codes[item_id])

    def sequence(self, items: Sequence[str]) -> Row:
        items = list(items)[-self.builder.cfg.history_items :]
        prompt, labels = self.builder.sequence([self.item(i) for i in items], end=self.end)
        return Row(prompt, tuple(labels), self._targets(labels, items[1:]))

    def query(self, text: str, target: str, history: Sequence[str] = ()) -> Row:
        prompt, labels = self.builder.example(text, [self.item(i) for i in history], self.codes[target], self.end)
        return Row(prompt, tuple(labels), self._targets(labels, [target]) if self.query_targets else ())

    def _targets(self, labels: Sequence[int], items: Sequence[str]) -> tuple[tuple[int, str], ...]:
        # A target's labels are contiguous: one per code, then <sid_end>.
        at = [pos for pos, label in enumerate(labels) if label >= 0]
        out, k = [], 0
        for item in items:
            if k >= len(at):
                break
            out.append((at[k], item))
            k += len(self.codes[item]) + 1
        return tuple(out)


def window(seq: Sequence[str], size: int, rng: np.random.Generator) -> Sequence[str]:
    """A random ``size``-item window of a longer sequence (each epoch sees another part of it)."""
    if len(seq) <= size:
        return seq
    end = int(rng.integers(size, len(seq) + 1))
    return seq[end - size : end]


@dataclass
class Batch:
    """Padded tensors of a batch of rows (right-padded; B rows, T positions).

    ids: long [B, T] token ids; labels: long [B, T] local SID ids, -1 where nothing is predicted;
    content: long [B, T] item-table row a position's ``<item>`` marker carries, -1 for none;
    targets: long [B, T] item-table row of the item whose first SID code a position predicts, -1
    elsewhere (the auxiliary next-item loss, ``TrainConfig.item_loss``);
    queries: long [B] row of each row's query in the query-vector table, -1 for none (or no table);
    attention: long [B, T] 1 on real positions.
    """

    ids: torch.Tensor
    labels: torch.Tensor
    content: torch.Tensor
    targets: torch.Tensor
    queries: torch.Tensor
    attention: torch.Tensor

    @property
    def tokens(self) -> int:
        return int(self.attention.sum())


def make_batches(rows: list[Row], batch_tokens: int, max_rows: int, pad_id: int, item_row: dict[str, int],
                 query_row: dict[str, int], rng: np.random.Generator) -> list[Batch]:
    """Length-bucketed batches, in random order (ties in length broken at random every epoch)."""
    lengths = np.fromiter((len(r.prompt) for r in rows), dtype=np.int64, count=len(rows))
    order = np.argsort(lengths + rng.random(len(rows)), kind="stable")
    groups, current, width = [], [], 0
    for i in order:
        w = max(width, int(lengths[i]))
        if current and (w * (len(current) + 1) > batch_tokens or len(current) >= max_rows):
            groups.append(current)
            current, w = [], int(lengths[i])
        current.append(i)
        width = w
    if current:
        groups.append(current)
    rng.shuffle(groups)
    return [_pad([rows[i] for i in g], pad_id, item_row, query_row) for g in groups]


def _pad(rows: list[Row], pad_id: int, item_row: dict[str, int], query_row: dict[str, int]) -> Batch:
    B, T = len(rows), max(len(r.prompt) for r in rows)
    ids = np.full((B, T), pad_id, dtype=np.int64)
    labels = np.full((B, T), -1, dtype=np.int64)
    content = np.full((B, T), -1, dtype=np.int64)
    targets = np.full((B, T), -1, dtype=np.int64)
    attention = np.zeros((B, T), dtype=np.int64)
    queries = np.full(B, -1, dtype=np.int64)
    for b, r in enumerate(rows):
        n = len(r.prompt)
        ids[b, :n], labels[b, :n], attention[b, :n] = r.prompt.ids, r.labels, 1
        for pos, item in r.prompt.content:
            content[b, pos] = item_row[item]
        for pos, item in r.targets:
            targets[b, pos] = item_row[item]
        if r.prompt.query:
            queries[b] = query_row.get(r.prompt.query, -1)
    return Batch(*(torch.from_numpy(a) for a in (ids, labels, content, targets, queries, attention)))
