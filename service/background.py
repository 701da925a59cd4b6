"""The life cycle shared by the service's Redis followers (``TrieSync``, ``ReleaseFollower``): one
daemon thread running the follower's ``_run`` loop until ``stop``, and a ready flag the loop sets
once there is something to serve."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Self


class Follower(ABC):
    def __init__(self, thread_name: str):
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    @abstractmethod
    def _run(self) -> None:
        """The loop: runs until ``self._stop`` is set, sets ``self._ready`` when it can serve."""

    def start(self) -> Self:
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once the follower has something to serve (within ``timeout`` seconds)."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
