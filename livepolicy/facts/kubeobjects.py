"""Turn raw Kubernetes objects (dicts as kubectl or the API return them) into facts.

Shared by every source that sees Kubernetes objects (snapshot file, live API), so a
snapshot and a live read of the same cluster give the same facts. Problems are collected
with the JSON pointer of the offending field instead of raising on the first one.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from livepolicy.facts.kubeconvert import Converter
from livepolicy.facts.kubevalues import (
    INFO_API,
    KNOWN_KINDS,
    REGION_KEYS,
    ZONE_KEYS,
    Report,
    image_family,
)
from livepolicy.facts.model import ClusterFacts, NodeFacts, PodFacts

__all__ = ["INFO_API", "KNOWN_KINDS", "REGION_KEYS", "ZONE_KEYS", "Converter", "Report",
           "assemble", "build_facts", "image_family"]


ByKind = dict[str, list[tuple[int, Any]]]  # kind -> (index in the items, object)


def build_facts(items: list[Any], report: Report, base: str = "/items",
                source: str = "") -> ClusterFacts:
    """Convert a list of Kubernetes objects (any order) into ClusterFacts."""
    conv = Converter(report)
    by_kind: ByKind = {}
    for i, obj in enumerate(items):
        ptr = f"{base}/{i}"
        if not isinstance(obj, dict):
            report(ptr, f"expected a Kubernetes object, got {type(obj).__name__}")
            continue
        kind = obj.get("kind")
        if not isinstance(kind, str):
            report(ptr, "object has no 'kind'")
            continue
        if kind not in KNOWN_KINDS:
            report(f"{ptr}/kind", f"unknown kind {kind!r} in snapshot (expected one of "
                   f"{', '.join(sorted(KNOWN_KINDS))})")
            continue
        by_kind.setdefault(kind, []).append((i, obj))
    return assemble(conv, by_kind, conv.pods, base, source)


def assemble(conv: Converter, by_kind: ByKind,
             pods_of: Callable[[list[tuple[int, Any]], str], list[PodFacts]], base: str,
             source: str) -> ClusterFacts:
    """ClusterFacts from objects grouped by kind: every kind but Pod as a dict; pods as
    `pods_of` takes them (dicts here, typed structs in kubetyped)."""
    for i, obj in by_kind.get("ClusterInfo", []):
        if obj.get("apiVersion") != INFO_API:
            conv.report(f"{base}/{i}/apiVersion",
                        f"ClusterInfo must have apiVersion {INFO_API!r}")
        conv.set_info(obj, f"{base}/{i}")
    for kind in ("ReplicaSet", "Job"):
        for _, obj in by_kind.get(kind, []):
            conv.index_owner(obj)
    for _, obj in by_kind.get("PersistentVolume", []):
        conv.index_pv(obj)
    for _, obj in by_kind.get("PersistentVolumeClaim", []):
        conv.index_pvc(obj)
    for _, obj in by_kind.get("ENIConfig", []):
        conv.index_eniconfig(obj)
    nodes = [n for i, o in by_kind.get("Node", []) if (n := conv.node(o, f"{base}/{i}"))]
    pods = pods_of(by_kind.get("Pod", []), base)
    pdbs = [d for i, o in by_kind.get("PodDisruptionBudget", [])
            if (d := conv.pdb(o, f"{base}/{i}"))]
    _check_unique(nodes, pods, by_kind, base, conv.report)
    replicas: dict[str, int] = {}
    for p in pods:
        w = p.workload
        replicas[w] = replicas.get(w, 0) + 1
    nodes.sort(key=lambda n: n.name)
    pods.sort(key=attrgetter("namespace", "name"))
    return ClusterFacts(info=conv.info, nodes=tuple(nodes), pods=tuple(pods),
                        pdbs=tuple(sorted(pdbs, key=lambda d: (d.namespace, d.name))),
                        eniconfigs=tuple(sorted(conv.eniconfigs)), workload_replicas=replicas,
                        source=source)


def _check_unique(nodes: list[NodeFacts], pods: list[PodFacts],
                  by_kind: ByKind, base: str,
                  report: Report) -> None:
    names = {n.name for n in nodes}
    if len(names) == len(nodes) and len({p.key for p in pods}) == len(pods) and all(
            p.node in names for p in pods if p.node):
        return  # the usual case, without building a pointer per object
    seen: set[str] = set()
    for (i, _), n in zip(by_kind.get("Node", []), nodes, strict=False):
        if n.name in seen:
            report(f"{base}/{i}/metadata/name", f"duplicate node {n.name!r}")
        seen.add(n.name)
    known = seen
    seen = set()
    for (i, _), p in zip(by_kind.get("Pod", []), pods, strict=False):
        if p.key in seen:
            report(f"{base}/{i}/metadata/name", f"duplicate pod {p.key!r}")
        seen.add(p.key)
        if p.node and p.node not in known:
            report(f"{base}/{i}/spec/nodeName", f"pod {p.key} is bound to unknown node "
                   f"{p.node!r}")
