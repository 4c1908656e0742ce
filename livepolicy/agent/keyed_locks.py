"""One lock per key (a pod, a migration id), made on first use.

The agent serialises work per pod and per migration while unrelated pods and migrations
proceed in parallel; service and runtimes alike need exactly this, so it lives once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class KeyedLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self.get(key):
            yield
