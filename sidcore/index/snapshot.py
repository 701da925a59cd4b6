"""One consistent, immutable view of an index version: its trie, its item attributes aligned with
the trie's item rows, and the names of the payload fields it stores.

A replica holds one ``IndexSnapshot`` at a time and swaps the reference when something changes
(``apply``: cold-start inserts and attribute updates from the version's log, in log order), so a
request that took a snapshot sees SIDs, items and attributes of one moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from sidcore.cache import Recent
from sidcore.errors import DataError
from sidcore.index.attributes import Attributes
from sidcore.index.trie import Trie
from sidcore.sid import SID


@dataclass(frozen=True)
class Inserted:
    """Log event: cold-start items appended to the version (rows after the existing ones, in order)."""

    items: tuple[tuple[str, SID], ...]


@dataclass(frozen=True, eq=False)
class AttributesSet:
    """Log event: attribute values set on item rows. ``values[name] = (rows, values)``: int64 [U]
    rows and their new values (None = cleared); ``new_values[name]``: the categorical (value, code)
    pairs Redis assigned to values first seen in this update."""

    values: dict[str, tuple[np.ndarray, list[Any]]]
    new_values: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


LogEvent = Inserted | AttributesSet


@dataclass(frozen=True, eq=False)
class IndexSnapshot:
    trie: Trie
    attributes: Attributes
    fields: tuple[str, ...] = ()  # payload fields stored with the version (in Redis)

    def __post_init__(self) -> None:
        if self.attributes.num_rows != self.trie.num_items:
            raise DataError(f"attributes cover {self.attributes.num_rows} rows, the trie {self.trie.num_items} items")

    @property
    def version(self) -> str:
        return self.trie.version

    def apply(self, events: Sequence[LogEvent]) -> "IndexSnapshot":
        """The snapshot after ``events`` (in log order); ``self`` if there are none."""
        trie, attributes = self.trie, self.attributes
        pending: list[tuple[str, SID]] = []
        for event in events:
            if isinstance(event, Inserted):
                pending.extend(event.items)  # consecutive inserts are applied in one go
                continue
            if pending:
                trie, pending = trie.insert(pending), []
            attributes = attributes.resized(trie.num_items).updated(event.values, event.new_values)
        if pending:
            trie = trie.insert(pending)
        if trie is self.trie and attributes is self.attributes:
            return self
        return IndexSnapshot(trie, attributes.resized(trie.num_items), self.fields)


_bare: Recent[Trie, IndexSnapshot] = Recent()


def as_snapshot(index: Trie | IndexSnapshot) -> IndexSnapshot:
    """``index`` itself, or a bare trie as a snapshot without attributes (the same one per recent
    trie, so caches keyed by snapshot keep working for callers that pass tries)."""
    if isinstance(index, IndexSnapshot):
        return index
    return _bare.get(index, lambda t: IndexSnapshot(t, Attributes.empty(t.num_items)))
