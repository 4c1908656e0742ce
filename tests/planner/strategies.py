"""Hypothesis strategies for small random clusters and policies (as raw objects)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

ZONES = ("z-a", "z-a", "z-b")
SUBNETS = {"z-a": ("s-a1", "s-a1", "s-a2"), "z-b": ("s-b1",)}
TYPES = ("m5.large", "c5.xlarge", "r5.large", "m5.xlarge", "c5.large", "m6g.large", "c3.large")


@st.composite
def node(draw: st.DrawFn, i: int) -> dict[str, Any]:
    zone = draw(st.sampled_from(ZONES))
    itype = draw(st.sampled_from(TYPES))
    arch = "arm64" if "g." in itype else "amd64"
    labels = {
        "kubernetes.io/arch": arch, "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": "r-1", "node.kubernetes.io/instance-type": itype,
        "topology.cast.ai/subnet-id": draw(st.sampled_from(SUBNETS[zone])),
        "pool": draw(st.sampled_from(("a", "b"))),
    }
    if draw(st.integers(0, 9)) > 0:
        labels["provisioner.cast.ai/managed-by"] = "cast.ai"
    taints = [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}] \
        if draw(st.integers(0, 5)) == 0 else []
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": f"n{i}", "labels": labels,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"unschedulable": draw(st.integers(0, 2)) == 0, "taints": taints},
        "status": {
            "allocatable": {"cpu": str(draw(st.integers(2, 32))),
                            "memory": f"{draw(st.integers(2, 64))}Gi",
                            "pods": str(draw(st.integers(3, 30)))},
            "nodeInfo": {"architecture": arch, "containerRuntimeVersion": "containerd://2.0.1",
                         "osImage": "Amazon Linux 2023"},
        },
    }


@st.composite
def pod(draw: st.DrawFn, i: int, nodes: int) -> list[dict[str, Any]]:
    owner = draw(st.sampled_from(("deploy", "sts", "bare", "ds", "job")))
    ns = draw(st.sampled_from(("a", "b")))
    app = f"app{draw(st.integers(0, 4))}"
    name = f"{app}-{i}" if owner != "sts" else f"{app}-{draw(st.integers(0, 5))}x{i}"
    objs: list[dict[str, Any]] = []
    refs = []
    if owner == "deploy":
        refs = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{app}-rs",
                 "controller": True}]
    elif owner == "sts":
        refs = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": app, "controller": True}]
    elif owner == "ds":
        refs = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": app, "controller": True}]
    elif owner == "job":
        refs = [{"apiVersion": "batch/v1", "kind": "Job", "name": app, "controller": True}]
    spec: dict[str, Any] = {
        "nodeName": f"n{draw(st.integers(0, nodes - 1))}",
        "containers": [{"name": "c", "tty": draw(st.integers(0, 15)) == 0, "resources": {
            "requests": {"cpu": f"{draw(st.integers(50, 2000))}m",
                         "memory": f"{draw(st.integers(16, 4096))}Mi"}}}],
    }
    if draw(st.integers(0, 4)) == 0:
        spec["nodeSelector"] = {"pool": draw(st.sampled_from(("a", "b")))}
    if draw(st.integers(0, 3)) == 0:
        spec["tolerations"] = [{"key": "dedicated", "operator": "Exists"}]
    if draw(st.integers(0, 4)) == 0:
        zone = draw(st.sampled_from(ZONES))
        claim = f"data-{i}"
        spec["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]
        objs += [
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": claim, "namespace": ns}, "spec": {"volumeName": f"pv-{i}"},
             "status": {"phase": "Bound"}},
            {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {
                "name": f"pv-{i}", "labels": {"topology.kubernetes.io/zone": zone}},
             "spec": {"csi": {"driver": "ebs.csi.aws.com"}}},
        ]
    objs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "namespace": ns, "uid": f"uid-{i}", "labels": {"app": app},
        "ownerReferences": refs}, "spec": spec, "status": {"phase": "Running"}})
    return objs


@st.composite
def cluster(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(3, 10))
    items: list[dict[str, Any]] = [{
        "apiVersion": "livepolicy.io/v1alpha1", "kind": "ClusterInfo",
        "metadata": {"name": "prop"},
        "spec": {"platform": "eks", "kubernetesVersion": "v1.31.0", "region": "r-1"}}]
    items += [draw(node(i)) for i in range(n)]
    seen: set[str] = set()
    for i in range(draw(st.integers(5, 40))):
        objs = draw(pod(i, n))
        if objs[-1]["metadata"]["name"] in seen:
            continue
        seen.add(objs[-1]["metadata"]["name"])
        items += objs
    items.append({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": {"name": "app0-rs", "namespace": "a", "ownerReferences": [
                      {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app0",
                       "controller": True}]}})
    if draw(st.booleans()):
        items.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                      "metadata": {"name": "pdb", "namespace": "a"},
                      "spec": {"selector": {"matchLabels": {"app": "app1"}}},
                      "status": {"disruptionsAllowed": draw(st.integers(0, 2))}})
    return items


@st.composite
def policy_docs(draw: st.DrawFn) -> list[dict[str, Any]]:
    def budgets() -> dict[str, Any]:
        return {"maxParallel": draw(st.integers(1, 4)),
                "maxOutboundPerNode": draw(st.integers(1, 3)),
                "maxInboundPerNode": draw(st.integers(1, 3)),
                "maxUnavailablePerWorkload": draw(st.sampled_from((1, 2, "50%", "100%")))}
    docs = [{"apiVersion": "livepolicy.io/v1alpha1", "kind": "MigrationPolicy",
             "metadata": {"name": "drain"},
             "spec": {"priority": 10, "sources": {"cordoned": True},
                      "placement": draw(st.sampled_from(("binpack", "spread"))),
                      "budgets": budgets()}}]
    if draw(st.booleans()):
        docs.append({"apiVersion": "livepolicy.io/v1alpha1", "kind": "MigrationPolicy",
                     "metadata": {"name": "pool-b"},
                     "spec": {"priority": draw(st.integers(0, 20)),
                              "workloads": {"namespaces": ["b"]},
                              "sources": {"selector": {"matchLabels": {"pool": "b"}}},
                              "destinations": {"selector": {"matchLabels": {"pool": "a"}}},
                              "budgets": budgets()}})
    return docs
