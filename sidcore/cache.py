"""Small caches for values derived from immutable snapshots (tries, index snapshots)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """One value per object, kept for the ``size`` objects used most recently (by identity).

    A ``WeakKeyDictionary`` would be the obvious choice, but these values reference their key (a
    ``TrieMask`` holds its trie), which would keep every key alive forever; here an old snapshot
    is let go once ``size`` newer ones have been used. Safe from several threads; two threads
    missing at once may both compute, and one result is kept.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._entries: OrderedDict[int, tuple[K, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[K], V]) -> V:
        with self._lock:
            hit = self._entries.get(id(key))
            if hit is not None and hit[0] is key:
                self._entries.move_to_end(id(key))
                return hit[1]
        value = make(key)
        with self._lock:
            self._entries[id(key)] = (key, value)
            self._entries.move_to_end(id(key))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value
