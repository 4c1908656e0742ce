"""Where apply records its outcome in the cluster: the narrow `ClusterWriter` interface.

Moving a pod is done by the agents; the writer only makes the cluster's record say so
(the pod is bound to its new node, labels set). Every call is idempotent, so recovery can
replay the journal's committed migrations into it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import orjson
from ruamel.yaml import YAML

from livepolicy.core.yamlsrc import gc_paused


class RecordMismatch(Exception):
    """`move_pod` found the cluster disagreeing with the agents' commit (Terraform's
    "inconsistent result after apply"): the engine reports the migration failed, and a
    re-run checks again."""


class ClusterWriter(Protocol):
    def move_pod(self, pod: str, uid: str, node: str) -> None: ...
    def set_label(self, pod: str, key: str, value: str | None) -> None: ...
    def request_eviction(self, pod: str) -> None: ...
    def flush(self) -> None: ...


class NoWriter:
    """Records nothing: a simulation of a live cluster, or real agents applying a plan
    made from a snapshot file (the file is not the cluster; take a fresh snapshot)."""

    def move_pod(self, pod: str, uid: str, node: str) -> None:
        pass

    def set_label(self, pod: str, key: str, value: str | None) -> None:
        pass

    def request_eviction(self, pod: str) -> None:
        pass

    def flush(self) -> None:
        pass


class SnapshotWriter:
    """Applies changes to a snapshot file (YAML keeps its comments; JSON stays compact)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._json = path.read_bytes().lstrip()[:1] in (b"{", b"[")
        self._yaml = YAML(typ="rt")
        self._yaml.width = 4096
        self._yaml.preserve_quotes = True
        self._yaml.indent(mapping=2, sequence=4, offset=2)
        self._data: Any = None
        self._pods: dict[str, Any] = {}
        self._dirty = False
        self.written = False  # whether flush changed the file

    def _load(self) -> None:
        if self._data is not None:
            return
        with gc_paused():
            if self._json:
                self._data = orjson.loads(self.path.read_bytes())
            else:
                self._data = self._yaml.load(self.path.read_text(encoding="utf-8"))
        items = self._data["items"] if isinstance(self._data, dict) else self._data
        for obj in items:
            if isinstance(obj, dict) and obj.get("kind") == "Pod":
                meta = obj.get("metadata") or {}
                self._pods[f"{meta.get('namespace', 'default')}/{meta.get('name')}"] = obj

    def _pod(self, pod: str) -> Any:
        self._load()
        obj = self._pods.get(pod)
        if obj is None:
            raise KeyError(f"pod {pod} is not in snapshot {self.path}")
        return obj

    def move_pod(self, pod: str, uid: str, node: str) -> None:
        obj = self._pod(pod)
        if obj["spec"].get("nodeName") != node:
            obj["spec"]["nodeName"] = node
            self._dirty = True

    def set_label(self, pod: str, key: str, value: str | None) -> None:
        meta = self._pod(pod)["metadata"]
        labels = meta.get("labels")
        if value is None:
            if labels and key in labels:
                del labels[key]
                self._dirty = True
            return
        if labels is None:
            meta["labels"] = labels = {}
        if labels.get(key) != value:
            labels[key] = value
            self._dirty = True

    def request_eviction(self, pod: str) -> None:
        meta = self._pod(pod)["metadata"]
        ann = meta.get("annotations")
        if ann is None:
            meta["annotations"] = ann = {}
        ann["livepolicy.io/eviction-requested"] = "true"
        self._dirty = True

    def flush(self) -> None:
        if not self._dirty:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("wb") as f:
            if self._json:
                f.write(orjson.dumps(self._data, option=orjson.OPT_INDENT_2))
            else:
                self._yaml.dump(self._data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._dirty = False
        self.written = True
