"""The lab as a cluster: a snapshot-format document built from what really runs.

`LabSource().read()` is what `--cluster lab` gives the planner: nodes labelled like EKS
nodes of a managed node pool (zone, subnet, architecture, instance type, containerd 2.x,
Amazon Linux 2023, managed-by label, CPU features from the node agent's CRIU capability
probe), and the pods where they run *now* (each node's pods directory, which the agents
keep current), with their IPs. So the snapshot follows the pods after every migration.
`LabWriter` is where `livepolicy apply` records labels and eviction requests for the lab.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.facts.kubeobjects import INFO_API, build_facts
from livepolicy.facts.model import ClusterFacts
from livepolicy.lab.lab import GENERATIONS, Lab, LabError, NodeInfo

KUBERNETES_VERSION = "v1.31.4-eks-lab"
CONTAINERD_VERSION = "containerd://2.0.5"
OS_IMAGE = "Amazon Linux 2023.6.20250203"
MANAGED_BY = ("provisioner.cast.ai/managed-by", "cast.ai")
SUBNET_LABEL = "topology.cast.ai/subnet-id"
NFD_PREFIX = "feature.node.kubernetes.io/cpu-cpuid."
POD_OVERHEAD = 16 * 2**20  # the interpreter itself, beside the memory a pod holds
NODE_MEMORY = "8Gi"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _capabilities(node: NodeInfo) -> dict[str, Any]:
    try:
        data = json.loads((Path(node.state_dir) / "runtime-capabilities.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def node_object(lab: Lab, node: NodeInfo) -> dict[str, Any]:
    caps = _capabilities(node)
    family = node.instance_type.split(".")[0]
    labels = {
        "kubernetes.io/arch": node.arch, "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": node.name,
        "node.kubernetes.io/instance-type": node.instance_type,
        "karpenter.k8s.aws/instance-family": family,
        "karpenter.k8s.aws/instance-generation": GENERATIONS[node.arch],
        "topology.kubernetes.io/zone": node.zone,
        "topology.kubernetes.io/region": str(lab.data.get("region", "")),
        SUBNET_LABEL: node.subnet, MANAGED_BY[0]: MANAGED_BY[1],
        "livepolicy.io/lab": lab.prefix,
    }
    if node.arch == "amd64":  # the host's CPU; a pretend arm64 node shows none
        for feature in caps.get("cpu_features", []):
            labels[f"{NFD_PREFIX}{feature}"] = "true"
    annotations = {"livepolicy.io/agent-url": node.agent_url,
                   "livepolicy.io/criu-version": str(caps.get("criu_version", "")),
                   "livepolicy.io/dirty-tracking": str(
                       caps.get("features", {}).get("dirty_tracking", False)).lower()}
    ready = lab.agent_alive(node)
    resources = {"cpu": "2", "memory": NODE_MEMORY, "pods": "110",
                 "ephemeral-storage": "20Gi"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node.name, "uid": f"lab-node-{lab.prefix}-{node.index}",
                     "creationTimestamp": node.created, "labels": labels,
                     "annotations": annotations},
        "spec": {"providerID": f"lab://{lab.prefix}/{node.name}",
                 **({"unschedulable": True} if node.unschedulable else {})},
        "status": {
            "capacity": resources, "allocatable": resources,
            "addresses": [{"type": "InternalIP", "address": node.ip},
                          {"type": "Hostname", "address": node.name}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "reason": "AgentReady" if ready else "AgentDown"}],
            "nodeInfo": {"architecture": node.arch, "operatingSystem": "linux",
                         "containerRuntimeVersion": CONTAINERD_VERSION, "osImage": OS_IMAGE,
                         "kernelVersion": platform.release(),
                         "kubeletVersion": KUBERNETES_VERSION},
        },
    }


def snapshot_document(lab: Lab) -> dict[str, Any]:
    """The lab in the snapshot format (a Kubernetes List plus ClusterInfo)."""
    info = {
        "apiVersion": INFO_API, "kind": "ClusterInfo",
        "metadata": {"name": str(lab.data.get("cluster_name", "lab"))},
        "spec": {
            "platform": "eks", "kubernetesVersion": KUBERNETES_VERSION,
            "region": str(lab.data.get("region", "")), "observedAt": _iso(time.time()),
            "networking": {"prefixDelegation": False, "mode": "standard"},
            "subnets": [{"id": s["id"], "zone": s["zone"], "cidr": s["cidr"], "tags": {}}
                        for s in lab.subnets()],
        },
    }
    items: list[dict[str, Any]] = [info]
    items += [node_object(lab, n) for n in lab.nodes]
    seen: dict[str, tuple[NodeInfo, Any]] = {}
    for node, rec in lab.all_pods():
        # During a migration a pod is on two nodes: the running copy is the pod.
        running = rec.state == "running" and rec.alive()
        if rec.key not in seen or running:
            seen[rec.key] = (node, rec)
    meta = lab.data.get("pod_meta", {})
    for key in sorted(seen):
        node, rec = seen[key]
        pod_meta = meta.get(key, {})
        running = rec.state == "running" and rec.alive()
        memory = rec.memory_bytes + POD_OVERHEAD
        items.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": rec.name, "namespace": rec.namespace, "uid": rec.uid,
                "creationTimestamp": pod_meta.get("created", _iso(rec.created_at)),
                "labels": dict(pod_meta.get("labels", rec.labels)),
                "annotations": {"livepolicy.io/memory-usage": str(memory),
                                **pod_meta.get("annotations", {})},
            },
            "spec": {
                "nodeName": node.name,
                "containers": [{
                    "name": "counter", "image": "livepolicy.io/lab-counter:1",
                    "ports": [{"containerPort": rec.port, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "50m", "memory": str(memory)},
                                  "limits": {"memory": str(memory + 64 * 2**20)}},
                }],
            },
            "status": {"phase": "Running" if running or rec.state != "running" else "Failed",
                       "podIP": rec.ip, "podIPs": [{"ip": rec.ip}], "hostIP": node.ip},
        })
    return {"apiVersion": "v1", "kind": "List", "items": items}


class LabSource:
    """`FactsSource` for `--cluster lab` (the lab at $LIVEPOLICY_LAB_DIR or the default)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.lab = Lab(root)

    def snapshot(self) -> dict[str, Any]:
        try:
            self.lab.load()
        except LabError as exc:
            raise DiagnosticError([Diagnostic("lab", str(exc), None)]) from None
        return snapshot_document(self.lab)

    def read(self) -> ClusterFacts:
        doc = self.snapshot()
        problems: list[tuple[str, str]] = []
        facts = build_facts(doc["items"], lambda p, m: problems.append((p, m)),
                            source="lab")
        if problems:
            raise DiagnosticError([Diagnostic("lab", m, p) for p, m in problems])
        return facts


class LabWriter:
    """`ClusterWriter` for the lab: pods move by themselves (the agents moved them), labels
    and eviction requests are kept in lab.json and show in the next snapshot."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.lab = Lab(root).load()
        self._dirty = False

    def _meta(self, pod: str) -> dict[str, Any]:
        meta: dict[str, Any] = self.lab.data.setdefault("pod_meta", {}).setdefault(pod, {})
        return meta

    def move_pod(self, pod: str, uid: str, node: str) -> None:
        """Nothing to write: the destination agent's pods directory already has the pod."""

    def set_label(self, pod: str, key: str, value: str | None) -> None:
        labels = self._meta(pod).setdefault("labels", {})
        if value is None:
            if key in labels:
                del labels[key]
                self._dirty = True
        elif labels.get(key) != value:
            labels[key] = value
            self._dirty = True

    def request_eviction(self, pod: str) -> None:
        self._meta(pod).setdefault("annotations", {})[
            "livepolicy.io/eviction-requested"] = "true"
        self._dirty = True

    def flush(self) -> None:
        if self._dirty:
            fresh = Lab(self.lab.root).load()  # keep pods created meanwhile
            fresh.data["pod_meta"] = {**fresh.data.get("pod_meta", {}),
                                      **self.lab.data.get("pod_meta", {})}
            fresh.save()
            self.lab = fresh
            self._dirty = False
