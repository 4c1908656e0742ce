"""Compact snapshots: keep only the fields livepolicy reads from each object.

A full `kubectl get -o json` pod is ~4-5 KB (env, probes, statuses, managed fields); what
the rules and the planner read is ~10 % of it. Leaning a snapshot before it is stored or
committed makes it several times smaller and faster to load, and gives the same facts
(tests/test_lean.py checks that).
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

_CONTAINER_KEYS = ("name", "tty", "stdin", "resources", "securityContext")
_POD_SPEC_KEYS = ("nodeName", "overhead", "volumes", "nodeSelector", "affinity",
                  "tolerations", "priority", "priorityClassName", "hostNetwork")
_NODE_INFO_KEYS = ("architecture", "containerRuntimeVersion", "osImage", "kernelVersion")
_READ_ANNOTATIONS = ("livepolicy.io/",)


def _dict(v: Any) -> JSON:
    return v if isinstance(v, dict) else {}


def _pick(d: Any, keys: tuple[str, ...]) -> JSON:
    return {k: d[k] for k in keys if isinstance(d, dict) and k in d}


def _meta(m: JSON, annotations: bool = False) -> JSON:
    out = _pick(m, ("name", "namespace", "uid", "labels", "ownerReferences",
                    "creationTimestamp", "deletionTimestamp"))
    if annotations and isinstance(m.get("annotations"), dict):
        kept = {k: v for k, v in m["annotations"].items() if k.startswith(_READ_ANNOTATIONS)}
        if kept:
            out["annotations"] = kept
    return out


def _container(c: JSON) -> JSON:
    out = _pick(c, _CONTAINER_KEYS)
    sc = out.get("securityContext")
    if isinstance(sc, dict):
        out["securityContext"] = _pick(sc, ("privileged",))
    return out


_VOLUME_DETAIL = {"persistentVolumeClaim": ("claimName",), "awsElasticBlockStore": ("volumeID",)}


def _volume(v: JSON) -> JSON:
    """A volume's name and kind (plus the claim or EBS id); its contents do not matter."""
    out: JSON = {"name": v.get("name")}
    for key, val in v.items():
        if key != "name":
            out[key] = _pick(val, _VOLUME_DETAIL.get(key, ()))
    return out


def lean_object(obj: JSON) -> JSON:
    kind = obj.get("kind")
    head = {"apiVersion": obj.get("apiVersion"), "kind": kind}
    meta, spec, status = (_dict(obj.get(k)) for k in ("metadata", "spec", "status"))
    if kind == "Pod":
        s = _pick(spec, _POD_SPEC_KEYS)
        if isinstance(s.get("affinity"), dict):
            s["affinity"] = _pick(s["affinity"], ("nodeAffinity",))
        if s.get("volumes"):
            s["volumes"] = [_volume(v) for v in s["volumes"] if isinstance(v, dict)]
        s["containers"] = [_container(c) for c in spec.get("containers") or []]
        if spec.get("initContainers"):
            s["initContainers"] = [_container(c) for c in spec["initContainers"]]
        return {**head, "metadata": _meta(meta, annotations=True), "spec": s,
                "status": _pick(status, ("phase",))}
    if kind == "Node":
        st = _pick(status, ("allocatable", "capacity"))
        st["nodeInfo"] = _pick(status.get("nodeInfo"), _NODE_INFO_KEYS)
        st["conditions"] = [c for c in status.get("conditions") or []
                            if isinstance(c, dict) and c.get("type") == "Ready"]
        return {**head, "metadata": _meta(meta),
                "spec": _pick(spec, ("taints", "unschedulable", "providerID")), "status": st}
    if kind in ("PersistentVolume", "PersistentVolumeClaim", "PodDisruptionBudget",
                "ClusterInfo"):
        out = {**head, "metadata": _meta(meta), "spec": spec}
        if kind in ("PersistentVolumeClaim", "PodDisruptionBudget"):
            out["status"] = _pick(status, ("phase", "disruptionsAllowed"))
        return out
    return {**head, "metadata": _meta(meta)}  # owners and ENIConfigs: identity is enough


def lean_snapshot(data: JSON) -> JSON:
    return {"apiVersion": "v1", "kind": "List",
            "items": [lean_object(o) for o in data.get("items", []) if isinstance(o, dict)]}
