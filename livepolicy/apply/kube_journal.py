"""`apply --lock-backend kube`: the journal kept in the cluster beside the Lease.

The local journal (`--state-dir`) is only on the machine that ran apply: if a CI runner
dies mid-apply, another runner has the Lease (once it expires) but not the journal, so
it could neither roll back nor roll forward. With the kube backend every journal line is
also written to a ConfigMap, `livepolicy-apply-journal-<fingerprint[:16]>` in the Lease's
namespace (key `journal.jsonl`), before the phase it records takes effect (the engine
journals first). A run that starts with a shorter local journal than the ConfigMap's
(a fresh working directory, another machine) takes the ConfigMap's first, then resumes as
after a local crash. Only the Lease holder writes it, so the two never race.

Limits: a ConfigMap holds at most 1 MiB (some thousands of migrations' phases); a write
that fails is retried, then the apply stops with an error rather than go on with a
journal another machine could not see.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import CONFIGMAPS

if TYPE_CHECKING:
    from livepolicy.kube.client import KubeClient

KEY = "journal.jsonl"
PREFIX = "livepolicy-apply-journal-"
TRIES = 5


class JournalMirrorError(RuntimeError):
    """The cluster copy of the journal could not be written."""


class KubeJournalStore:
    def __init__(self, client: KubeClient, fingerprint: str, namespace: str) -> None:
        self.client = client
        self.name = PREFIX + fingerprint[:16]
        self.namespace = namespace
        self._version = ""  # resourceVersion of our last write (optimistic concurrency)
        self._exists: bool | None = None

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def load(self) -> str:
        """The journal text in the cluster ('' when there is none yet)."""
        cm = self.client.get_optional(CONFIGMAPS, self.name, self.namespace)
        self._exists = cm is not None
        if cm is None:
            return ""
        self._version = str((cm.get("metadata") or {}).get("resourceVersion", ""))
        return str((cm.get("data") or {}).get(KEY, ""))

    def save(self, text: str) -> None:
        """Write the whole journal (create the ConfigMap the first time)."""
        meta: dict[str, Any] = {
            "name": self.name, "namespace": self.namespace,
            "labels": {"app.kubernetes.io/managed-by": "livepolicy",
                       "app.kubernetes.io/component": "apply-journal"}}
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                "data": {KEY: text}}
        delay = 0.1
        for attempt in range(TRIES):
            try:
                if self._exists is None:
                    self.load()
                if self._exists:
                    if self._version:
                        meta["resourceVersion"] = self._version
                    out = self.client.replace(CONFIGMAPS, body, self.namespace)
                else:
                    out = self.client.create(CONFIGMAPS, body, self.namespace)
                self._exists = True
                self._version = str((out.get("metadata") or {}).get("resourceVersion", ""))
                return
            except KubeError as exc:
                if exc.status in (409, 404):  # changed or gone under us: read it again
                    self._exists = None
                    meta.pop("resourceVersion", None)
                if attempt == TRIES - 1:
                    raise JournalMirrorError(f"cannot write the journal to {self.where}: "
                                             f"{exc}") from None
                time.sleep(delay)
                delay *= 2
