"""Pods as the Kubernetes API holds them, for the `kubelet` runtime.

On a real node a pod is an API object: the source is read from the API (its containers,
their containerd ids, its node), the restored copy is *created* through the API with
`nodeName` set to the destination (the scheduler is bypassed: the plan already placed it)
and every container image replaced by its checkpoint image, and the commit deletes the
source object. `PodApi` is that narrow interface; `KubePodApi` implements it over the
project's raw-JSON client.

Names: the API cannot hold two pods of one name, and before the commit point both exist,
so the restored pod is `<name>-<8 hex of the migration id>`. Until the commit it carries
none of the source's labels and owner references (they are parked in annotations): no
Service routes to it, no ReplicaSet adopts it and deletes one of the two copies. The
commit hands them over (`handover_patch`), so from then on the restored pod is the one
its controller owns and its Services select.

Pod spec changes on restore, following what live migration means for a running process:
init containers and PostStart hooks already ran (dropped), a startup probe would restart
a process that is past startup (dropped), images are local only (`imagePullPolicy: Never`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from typing import Any, Protocol

from livepolicy.core.quantity import bytes_of
from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import PODS

RESTORED_FROM = "livepolicy.io/restored-from-uid"  # label: found by the source at commit
A_SOURCE = "livepolicy.io/restored-from"
A_MIGRATION = "livepolicy.io/migration"
A_STATE = "livepolicy.io/state-sha256"
A_LABELS = "livepolicy.io/parked-labels"
A_OWNERS = "livepolicy.io/parked-owner-references"

Pod = dict[str, Any]


class PodApi(Protocol):
    def get(self, namespace: str, name: str) -> Pod | None: ...

    def list_on_node(self, node: str) -> list[Pod]: ...

    def create(self, namespace: str, pod: Pod) -> Pod: ...

    def delete(self, namespace: str, name: str, uid: str) -> bool: ...

    def patch(self, namespace: str, name: str, patch: Pod) -> Pod: ...

    def restored_from(self, namespace: str, source_uid: str) -> list[Pod]: ...

    def with_address(self, address: str) -> list[Pod]: ...


class KubePodApi:
    """`PodApi` over `KubeClient` (kubeconfig, or the agent's in-cluster ServiceAccount)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    def get(self, namespace: str, name: str) -> Pod | None:
        return self.client.get_optional(PODS, name, namespace)

    def list_on_node(self, node: str) -> list[Pod]:
        return self.client.list(PODS, field_selector=f"spec.nodeName={node}").items

    def create(self, namespace: str, pod: Pod) -> Pod:
        return self.client.create(PODS, pod, namespace)

    def delete(self, namespace: str, name: str, uid: str) -> bool:
        """Delete now (grace 0: the source copy must not run its shutdown), only if the
        object still has `uid`; False if it was gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        try:
            self.client.request("DELETE", PODS.path(namespace, name), body=body)
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def patch(self, namespace: str, name: str, patch: Pod) -> Pod:
        return self.client.patch(PODS, name, patch, namespace)

    def restored_from(self, namespace: str, source_uid: str) -> list[Pod]:
        return self.client.list(PODS, namespace=namespace,
                                label_selector=f"{RESTORED_FROM}={source_uid}").items

    def with_address(self, address: str) -> list[Pod]:
        """Pods (any namespace, not finished) that have this IP address."""
        pods = self.client.list(PODS, field_selector=f"status.podIP={address}").items
        return [p for p in pods if (p.get("status") or {}).get("phase")
                not in ("Succeeded", "Failed")]


def restored_name(name: str, mid: str) -> str:
    return f"{name[:240]}-{hashlib.sha256(mid.encode()).hexdigest()[:8]}"


def container_names(pod: Pod) -> list[str]:
    return [str(c["name"]) for c in (pod.get("spec") or {}).get("containers") or []]


def container_ids(pod: Pod) -> dict[str, str]:
    """Container name -> containerd id (`containerd://<id>` in the pod status)."""
    out = {}
    for st in (pod.get("status") or {}).get("containerStatuses") or []:
        cid = str(st.get("containerID") or "")
        if cid:
            out[str(st.get("name"))] = cid.split("://", 1)[-1]
    return out


def memory_bytes(pod: Pod) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        value = (res.get("requests") or {}).get("memory") or (res.get("limits") or {}).get(
            "memory")
        if value is not None:
            with contextlib.suppress(ValueError):
                total += bytes_of(value)
    return total


#: How much of the kubelet's messages (containerd's, runc's, CRIU's errors) a reason keeps.
MAX_REASON_MESSAGE = 600


def _state(st: dict[str, Any]) -> str:
    """`Reason: message` of a container that does not run (waiting or terminated), with
    its last termination's: where the kubelet puts containerd's refusal of a restore
    (StartError, RunContainerError: runc's and CRIU's words) once it is in back-off."""
    state = st.get("state") or {}
    now = state.get("waiting") or state.get("terminated") or {}
    out = str(now.get("reason") or next(iter(state), "unknown"))
    if now.get("message"):
        out += f": {str(now['message'])[:MAX_REASON_MESSAGE]}"
    last = (st.get("lastState") or {}).get("terminated") or {}
    if last.get("message") and str(last["message"])[:MAX_REASON_MESSAGE] not in out:
        out += f" (last: {last.get('reason')}: {str(last['message'])[:MAX_REASON_MESSAGE]})"
    return out


def is_running(pod: Pod) -> tuple[bool, str]:
    """Whether every container runs, and if not, why (the kubelet's waiting reason)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        reasons = [f"{s.get('name')}: {_state(s)}" for s in status.get("containerStatuses")
                   or [] if (s.get("state") or {}).get("waiting")]
        return False, f"pod is {status.get('phase') or 'Pending'}" + (
            f" ({'; '.join(reasons)})" if reasons else "")
    states = {str(s.get("name")): s for s in status.get("containerStatuses") or []}
    for name in container_names(pod):
        st = states.get(name)
        if st is None:
            return False, f"container {name} is not running"
        if "running" not in (st.get("state") or {}):
            return False, f"container {name} is not running ({_state(st)})"
        if int(st.get("restartCount") or 0) > 0:
            return False, f"container {name} restarted (started afresh, not restored)"
    return True, ""


def restored_pod(source: Pod, *, name: str, node: str, images: dict[str, str], mid: str,
                 state_sha256: str) -> Pod:
    """The API object of the restored copy of `source` (see the module docstring)."""
    meta = source.get("metadata") or {}
    spec = copy.deepcopy(source.get("spec") or {})
    spec["nodeName"] = node
    for key in ("initContainers", "ephemeralContainers"):
        spec.pop(key, None)
    for c in spec.get("containers") or []:
        c["image"] = images[str(c["name"])]
        c["imagePullPolicy"] = "Never"
        c.pop("startupProbe", None)
        lifecycle = c.get("lifecycle") or {}
        lifecycle.pop("postStart", None)
        if not lifecycle:
            c.pop("lifecycle", None)
    annotations = dict(meta.get("annotations") or {})
    annotations.update({
        A_SOURCE: f"{meta.get('namespace')}/{meta.get('name')}",
        A_MIGRATION: mid,
        A_STATE: state_sha256,
        A_LABELS: json.dumps(meta.get("labels") or {}, sort_keys=True),
        A_OWNERS: json.dumps(meta.get("ownerReferences") or []),
    })
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": meta.get("namespace"),
                         "labels": {RESTORED_FROM: str(meta.get("uid"))},
                         "annotations": annotations},
            "spec": spec}


#: The source at commit: first in line should its ReplicaSet scale down (which it may while
#: it owns both the source and the handed-over copy).
LEAVING_PATCH: Pod = {"metadata": {"annotations": {
    "controller.kubernetes.io/pod-deletion-cost": str(-(2**31))}}}


def handover_patch(restored: Pod) -> Pod:
    """Merge patch giving the restored pod the source's labels and owners (at commit)."""
    ann = (restored.get("metadata") or {}).get("annotations") or {}
    try:
        labels = json.loads(ann.get(A_LABELS) or "{}")
        owners = json.loads(ann.get(A_OWNERS) or "[]")
    except ValueError:
        labels, owners = {}, []
    return {"metadata": {"labels": {**labels, RESTORED_FROM: None},
                         "ownerReferences": owners,
                         "annotations": {A_LABELS: None, A_OWNERS: None}}}
