"""In-memory caches of the cluster, one `Store` per kind, fed by lists and watch events.

Why: the controller re-assesses on every change, and reading 150,000 pods each time would
cost more than the assessment. A store holds the latest raw object of each key and the
resourceVersion to watch from; `apply` folds one watch event in, `replace` swaps in a
fresh list (after a 410 or on resync) and says whether anything actually differed, so
a resync that finds nothing new triggers no write. Pure and thread-safe: the watch thread
writes, the assessment takes `items()` (a list of references; objects are never mutated
in place, only replaced).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from livepolicy.kube.watch import WatchEvent


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


def version_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def newer(candidate: str, current: str) -> bool:
    """Whether resourceVersion `candidate` is later than `current`. Versions are opaque
    to clients, but every server this talks to uses etcd revisions: compare as integers
    when both are, otherwise take the candidate."""
    if candidate.isdigit() and current.isdigit():
        return int(candidate) > int(current)
    return candidate != current


def only_label_changed(old: Mapping[str, Any], new: Mapping[str, Any], label: str,
                       value: str | None) -> bool:
    """`new` is `old` with `label` set to `value` (None: removed) and a new version."""
    labels = dict((old.get("metadata") or {}).get("labels") or {})
    if value is None:
        labels.pop(label, None)
    else:
        labels[label] = value
    new_meta = new.get("metadata") or {}
    if (new_meta.get("labels") or {}) != labels:
        return False
    skip = ("resourceVersion", "labels", "managedFields")
    return {k: v for k, v in (old.get("metadata") or {}).items() if k not in skip} == \
        {k: v for k, v in new_meta.items() if k not in skip} and \
        {k: v for k, v in old.items() if k != "metadata"} == \
        {k: v for k, v in new.items() if k != "metadata"}


@dataclass(frozen=True)
class Diff:
    added: int = 0
    modified: int = 0
    deleted: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.modified or self.deleted)


class Store:
    """The objects of one kind, by `namespace/name` (or `name` for cluster objects)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.resource_version = ""
        self.synced = False
        self._objects: dict[str, dict[str, Any]] = {}
        self._expected: dict[str, tuple[str, str | None]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get(key)

    def items(self) -> list[dict[str, Any]]:
        """Every object, ordered by key (as a list call returns them)."""
        with self._lock:
            return [self._objects[k] for k in sorted(self._objects)]

    def apply(self, event: WatchEvent) -> bool:
        """Fold one watch event in; True when the cached objects changed."""
        rv = event.resource_version
        with self._lock:
            if rv:
                self.resource_version = rv
            if event.type == "BOOKMARK":
                return False
            key = object_key(event.object)
            if event.type == "DELETED":
                return self._objects.pop(key, None) is not None
            old = self._objects.get(key)
            if old is not None and version_of(old) == rv and rv:
                return False  # already seen (our own write, put back by `put`)
            self._objects[key] = event.object
            expected = self._expected.pop(key, None)
            if old is not None and expected is not None and event.type == "MODIFIED":
                # The echo of a label write of ours, arriving before its answer: the
                # assessment that made it already counted it in.
                return not only_label_changed(old, event.object, *expected)
            return True

    def expect(self, key: str, label: str, value: str | None) -> None:
        """A write of `label` (None: removal) to object `key` is on its way."""
        with self._lock:
            self._expected[key] = (label, value)

    def put(self, obj: dict[str, Any]) -> bool:
        """Store an object this process wrote (the answer to a PATCH) unless the cache
        already has a later version: the next assessment then sees its own write even
        before the watch delivers it."""
        key = object_key(obj)
        with self._lock:
            old = self._objects.get(key)
            self._expected.pop(key, None)
            if old is not None and not newer(version_of(obj), version_of(old)):
                return False
            self._objects[key] = obj
            return True

    def replace(self, objects: Iterable[dict[str, Any]], resource_version: str) -> Diff:
        """Swap in a fresh list; the diff counts what the cache had wrong."""
        fresh = {object_key(o): o for o in objects}
        with self._lock:
            old = self._objects
            added = sum(1 for k in fresh if k not in old)
            deleted = sum(1 for k in old if k not in fresh)
            modified = sum(1 for k, o in fresh.items()
                           if k in old and version_of(old[k]) != version_of(o))
            self._objects = fresh
            self.resource_version = resource_version
            self.synced = True
        return Diff(added, modified, deleted)
