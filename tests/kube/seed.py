"""Put snapshot objects into a real kube-apiserver, and take them out again.

A snapshot is what `kubectl get -o yaml` prints: objects with server-set fields (uid,
resourceVersion, creationTimestamp) and a `status`. The API server sets those fields
itself, so `seed` strips them, creates each object, then writes its status through the
`/status` subresource (there is no kubelet or controller to do it). It also creates what
admission needs first: namespaces, PriorityClasses named by pods, the ENIConfig CRD.

Shared by tests/kube and bench/kube_bench.py.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import (
    CRDS,
    ENICONFIGS,
    NAMESPACES,
    NODES,
    PODS,
    PVS,
    SNAPSHOT_RESOURCES,
    Resource,
)

T = TypeVar("T")
SEED_MANAGER = "livepolicy-test-seed"  # not `livepolicy`: tests check what that one owns

PRIORITY_CLASSES = Resource("PriorityClass", "scheduling.k8s.io/v1", "priorityclasses",
                            namespaced=False)
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
BY_KIND = {r.kind: r for r in SNAPSHOT_RESOURCES}
# Objects whose status the facts read (nodes: allocatable, nodeInfo, conditions; pods:
# phase; claims: phase; PDBs: disruptionsAllowed).
STATUS_KINDS = frozenset({"Node", "Pod", "PersistentVolumeClaim", "PersistentVolume",
                          "PodDisruptionBudget"})
CREATE_ORDER = ("PersistentVolume", "PersistentVolumeClaim", "Deployment", "ReplicaSet",
                "StatefulSet", "DaemonSet", "CronJob", "Job", "PodDisruptionBudget",
                "ENIConfig", "Node", "Pod")
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "managedFields",
                  "generation", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")

ENICONFIG_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "eniconfigs.crd.k8s.amazonaws.com"},
    "spec": {
        "group": "crd.k8s.amazonaws.com",
        "scope": "Cluster",
        "names": {"plural": "eniconfigs", "singular": "eniconfig", "kind": "ENIConfig",
                  "listKind": "ENIConfigList"},
        "versions": [{
            "name": "v1alpha1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}


@dataclass
class SeedReport:
    objects: int = 0
    statuses: int = 0
    seconds: float = 0.0


def parallel(fn: Callable[[T], Any], items: Iterable[T], workers: int = 16) -> None:
    """Run `fn` over `items` on a thread pool; the first exception is raised."""
    with ThreadPoolExecutor(workers, thread_name_prefix="seed") as pool:
        for _ in pool.map(fn, items):
            pass


def _create_if_absent(client: KubeClient, res: Resource, obj: dict[str, Any],
                      namespace: str | None = None) -> None:
    try:
        client.create(res, obj, namespace)
    except KubeError as exc:
        if exc.status != 409:
            raise


def ensure_eniconfig_crd(client: KubeClient, timeout: float = 30.0) -> None:
    """Install the ENIConfig CRD and wait until its objects can be listed."""
    _create_if_absent(client, CRDS, copy.deepcopy(ENICONFIG_CRD))
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.request("GET", ENICONFIGS.path(), query=[("limit", 1)])
            return
        except KubeError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def remove_eniconfig_crd(client: KubeClient, timeout: float = 30.0) -> None:
    """Delete the CRD and wait until the API no longer serves it."""
    name = ENICONFIG_CRD["metadata"]["name"]
    try:
        client.delete(CRDS, name)
    except KubeError as exc:
        if not exc.not_found:
            raise
    deadline = time.monotonic() + timeout
    while client.get_optional(CRDS, name) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRD {name} still present after {timeout} s")
        time.sleep(0.1)


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    out.pop("status", None)
    if out.get("kind") == "Pod":
        spec = out.setdefault("spec", {})
        spec.pop("priority", None)  # admission computes it from priorityClassName
        for c in spec.get("containers") or []:
            c.setdefault("image", "registry.invalid/livepolicy-test:1")
    if out.get("kind") == "Job":  # the server generates the selector and its labels
        spec = out.setdefault("spec", {})
        spec.pop("selector", None)
        spec.pop("manualSelector", None)
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        for key in ("controller-uid", "batch.kubernetes.io/controller-uid"):
            labels.pop(key, None)
    return out


def seed(client: KubeClient, items: Sequence[dict[str, Any]], *, workers: int = 16
         ) -> SeedReport:
    """Create every object of a snapshot (ClusterInfo is skipped), statuses included."""
    t0 = time.perf_counter()
    report = SeedReport()
    objs = [o for o in items if o.get("kind") in BY_KIND]
    namespaces = sorted({str(o["metadata"].get("namespace", "default")) for o in objs
                         if BY_KIND[o["kind"]].namespaced} - SYSTEM_NAMESPACES)
    parallel(lambda ns: _create_if_absent(client, NAMESPACES, {"metadata": {"name": ns}}),
             namespaces, workers)
    classes: dict[str, int] = {}
    for o in objs:
        spec = o.get("spec") or {}
        name = spec.get("priorityClassName") if o["kind"] == "Pod" else None
        if name and not str(name).startswith("system-"):
            classes.setdefault(str(name), int(spec.get("priority", 0) or 0))
    parallel(lambda kv: _create_if_absent(client, PRIORITY_CLASSES, {
        "metadata": {"name": kv[0]}, "value": kv[1]}), sorted(classes.items()), workers)
    if any(o["kind"] == "ENIConfig" for o in objs):
        ensure_eniconfig_crd(client)

    def create(o: dict[str, Any]) -> None:
        res = BY_KIND[o["kind"]]
        ns = str(o["metadata"].get("namespace", "default")) if res.namespaced else None
        created = client.create(res, _clean(o), ns, field_manager=SEED_MANAGER)
        if o["kind"] == "Node":
            # Admission taints new nodes not-ready; the node lifecycle controller (absent
            # here) lifts that once the kubelet reports Ready. Put the snapshot's back.
            want = (o.get("spec") or {}).get("taints") or None
            if (created.get("spec") or {}).get("taints") != want:
                client.patch(res, str(o["metadata"]["name"]), {"spec": {"taints": want}},
                             field_manager=SEED_MANAGER)
        if o["kind"] in STATUS_KINDS and o.get("status"):
            client.patch(res, str(o["metadata"]["name"]), {"status": o["status"]}, ns,
                         subresource="status", field_manager=SEED_MANAGER)

    for kind in CREATE_ORDER:
        batch = [o for o in objs if o["kind"] == kind]
        parallel(create, batch, workers)
        report.objects += len(batch)
        report.statuses += sum(1 for o in batch if kind in STATUS_KINDS and o.get("status"))
    report.seconds = time.perf_counter() - t0
    return report


def _drop_finalizers(client: KubeClient, res: Resource, namespace: str | None) -> None:
    """Without a controller-manager, protection finalizers never go: remove them."""
    for o in client.list(res, namespace=namespace).items:
        meta = o.get("metadata") or {}
        if meta.get("finalizers"):
            try:
                client.patch(res, str(meta["name"]), {"metadata": {"finalizers": None}},
                             meta.get("namespace"))
            except KubeError as exc:
                if not exc.not_found:
                    raise


def wipe(client: KubeClient, *, workers: int = 8) -> None:
    """Delete every object a snapshot reads (in every namespace), and the info ConfigMap."""
    namespaces = [str(n["metadata"]["name"]) for n in client.list(NAMESPACES).items]
    crd = client.get_optional(CRDS, ENICONFIG_CRD["metadata"]["name"]) is not None

    def wipe_namespace(ns: str) -> None:
        for res in SNAPSHOT_RESOURCES:
            if res.namespaced:
                client.delete_collection(res, ns, grace_period=0 if res is PODS else None)
        for res in SNAPSHOT_RESOURCES:
            if res.namespaced and res is not PODS:
                _drop_finalizers(client, res, ns)

    parallel(wipe_namespace, namespaces, workers)
    for res in (NODES, PVS, *((ENICONFIGS,) if crd else ())):
        client.delete_collection(res)
    _drop_finalizers(client, PVS, None)
    try:
        client.delete(Resource("ConfigMap", "v1", "configmaps"), "livepolicy-cluster-info",
                      "kube-system")
    except KubeError as exc:
        if not exc.not_found:
            raise


def put_cluster_info(client: KubeClient, info: dict[str, Any], *, name: str | None = None
                     ) -> None:
    """Store a ClusterInfo's spec in the ConfigMap kube-system/livepolicy-cluster-info."""
    import orjson

    cm = Resource("ConfigMap", "v1", "configmaps")
    data = {"spec": orjson.dumps(info.get("spec") or {}).decode()}  # JSON is YAML
    if name is not None:
        data["name"] = name
    body = {"metadata": {"name": "livepolicy-cluster-info"}, "data": data}
    try:
        client.create(cm, body, "kube-system")
    except KubeError as exc:
        if exc.status != 409:
            raise
        client.replace(cm, body, "kube-system")
