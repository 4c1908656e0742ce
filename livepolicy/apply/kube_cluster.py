"""`ClusterWriter` for a live cluster (`apply --cluster kube`).

With the kubelet runtime the agents move the pod themselves (docs/kubelet-runtime.md,
section 3): the destination creates the copy `<name>-<8 hex>` on its node, and the
source's commit deletes the source (grace 0, uid precondition) and hands the source's
labels and owner references over to the copy. So this writer never moves a pod (a pod's
`nodeName` cannot change anyway); it checks the move, and writes what only apply writes:

- `move_pod` verifies the commit (below) and remembers the copy's name, so that the
  plan's label changes, addressed to the pod's old name, land on the pod that now runs;
- `set_label` queues the plan's `live.cast.ai/migration-enabled` changes; `flush`
  writes them through `LabelWriter` (what `livepolicy label` uses);
- `request_eviction` is a policy's `onFailure: evict` on a real cluster: the Eviction
  API (`policy/v1`), which the API server refuses (429) while a PodDisruptionBudget
  allows no disruption. Refused evictions are reported, never forced or retried here:
  the pod was rolled back and keeps running on its source.

A problem writing (a refused eviction, a failed label write) is reported as a
`cluster_write` event with level `error` and counted in `failures`: the command exits 1.
"""

from __future__ import annotations

import time
from typing import Any

from livepolicy.agent.runtimes.kubelet_pods import A_SOURCE
from livepolicy.apply.cluster import RecordMismatch
from livepolicy.apply.events import EventSink, make_event
from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.labels import LabelEdit, LabelOutcome, LabelWriter
from livepolicy.kube.resources import PODS

SETTLE_S = 5.0  # how long a deleted source may still be read back (grace 0: at once)


def _split(pod: str) -> tuple[str, str]:
    ns, _, name = pod.partition("/")
    return ns, name


class KubeWriter:
    def __init__(self, client: KubeClient, sink: EventSink | None = None, *,
                 settle_s: float = SETTLE_S) -> None:
        self.client = client
        self.sink = sink
        self.settle_s = settle_s
        self.renamed: dict[str, str] = {}  # ns/old name -> ns/name of the restored copy
        self.edits: list[LabelEdit] = []
        self.label_outcomes: list[LabelOutcome] = []
        self.failures = 0

    def _report(self, message: str, pod: str, level: str = "error", **data: Any) -> None:
        if level == "error":
            self.failures += 1
        if self.sink is not None:
            self.sink.emit(make_event("cluster_write", message, level, pod=pod, **data))

    def move_pod(self, pod: str, uid: str, node: str) -> None:
        """Check the agents' commit against the API; raise RecordMismatch when it differs.

        Checked: the source object (this name *and* this uid: a pod recreated under the
        same name by its controller is another pod) no longer exists, or is terminating;
        and a pod restored from it (annotation `livepolicy.io/restored-from: ns/name`,
        kept by the copy after the commit) is bound to `node`. The copy's name is not
        predictable here (its suffix hashes the agents' migration id), so it is found by
        that annotation; the newest one wins if the name was moved there twice.

        Reading the pod by its old name and seeing it on `node` would be wrong: the copy
        has another name, and an unchanged pod on its source means nothing moved (agents
        of another runtime: `sim` simulates, `criu` moves processes, not API objects).
        """
        ns, name = _split(pod)
        deadline = time.monotonic() + self.settle_s
        while True:
            try:
                cur = self.client.get_optional(PODS, name, ns)
            except KubeError as exc:
                raise RecordMismatch(f"cannot read pod {pod} back: {exc}") from None
            meta = (cur or {}).get("metadata") or {}
            alive = cur is not None and (not uid or meta.get("uid") == uid) \
                and not meta.get("deletionTimestamp")
            if not alive:
                break
            if time.monotonic() > deadline:
                where = ((cur or {}).get("spec") or {}).get("nodeName")
                raise RecordMismatch(
                    f"pod {pod} (uid {uid}) still exists on {where}: the agents reported the "
                    "commit but the source pod was not deleted (do the agents run the "
                    "kubelet runtime?)")
            time.sleep(0.2)
        try:
            pods = self.client.list(PODS, namespace=ns,
                                    field_selector=f"spec.nodeName={node}").items
        except KubeError as exc:
            raise RecordMismatch(f"cannot list the pods of {node}: {exc}") from None
        copies = [p for p in pods
                  if ((p["metadata"].get("annotations") or {}).get(A_SOURCE) == pod
                      and not p["metadata"].get("deletionTimestamp"))]
        if not copies:
            raise RecordMismatch(f"no pod restored from {pod} (annotation {A_SOURCE}) is on "
                                 f"{node}: the source is gone and so is its copy")
        newest = max(copies, key=lambda p: (str(p["metadata"].get("creationTimestamp", "")),
                                            str(p["metadata"]["name"])))
        self.renamed[pod] = f"{ns}/{newest['metadata']['name']}"

    def set_label(self, pod: str, key: str, value: str | None) -> None:
        ns, name = _split(self.renamed.get(pod, pod))
        self.edits.append(LabelEdit(ns, name, key, value))

    def request_eviction(self, pod: str) -> None:
        ns, name = _split(pod)
        body = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": name, "namespace": ns}}
        try:
            self.client.request("POST", PODS.path(ns, name) + "/eviction", body=body)
        except KubeError as exc:
            if exc.not_found:
                self._report(f"{pod}: not evicted: the pod is gone", pod, "warn")
            elif exc.status == 429:
                self._report(f"{pod}: eviction refused: a PodDisruptionBudget allows no "
                             f"disruption now ({exc})", pod, eviction="refused")
            else:
                self._report(f"{pod}: eviction failed: {exc}", pod, eviction="failed")
            return
        if self.sink is not None:
            self.sink.emit(make_event("cluster_write", f"{pod}: eviction requested", pod=pod,
                                      eviction="requested"))

    def flush(self) -> None:
        edits, self.edits = self.edits, []
        if not edits:
            return
        out = LabelWriter(self.client).run(edits, {}, lambda fresh: [])
        self.label_outcomes.extend(out)
        for o in out:
            if o.result == "failed":
                self._report(f"{o.edit.pod}: label {o.edit.key} not written: {o.message}",
                             o.edit.pod, label=o.to_json())
            elif o.result == "gone":
                self._report(f"{o.edit.pod}: label {o.edit.key} not written: the pod is gone",
                             o.edit.pod, "warn", label=o.to_json())
