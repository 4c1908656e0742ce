"""The synthetic cluster generator and the hand-shaped example must stay trustworthy inputs.

Benchmarks and planner tests read these snapshots instead of real clusters, so they must be
deterministic, have the requested size, parse without a single diagnostic, and (for the
example) cover every owner kind, volume kind and pod-rule trigger the rules know about.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.synth import MIGRATION_ENABLED, NOW, generate, main, ts
from livepolicy.facts.model import ClusterFacts, OwnerKind, VolumeKind
from livepolicy.facts.snapshot import SnapshotSource
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "cluster.yaml"


def kinds(snapshot: dict[str, Any]) -> Counter[str]:
    return Counter(o["kind"] for o in snapshot["items"])


def read(path: Path) -> ClusterFacts:
    """SnapshotSource raises DiagnosticError on any problem, so reading is the assertion."""
    return SnapshotSource(path).read()


def volume_kinds(facts: ClusterFacts) -> set[VolumeKind]:
    """Kinds seen directly in pod specs plus what the PVs behind claims really are."""
    out: set[VolumeKind] = set()
    for p in facts.pods:
        for v in p.volumes:
            out.add(v.kind)
            if v.backend is not None:
                out.add(v.backend)
    return out


# ---------------------------------------------------------------------------- generate()

def test_same_seed_same_bytes_other_seed_other_cluster() -> None:
    a = orjson.dumps(generate(40, 20, seed=3))
    assert a == orjson.dumps(generate(40, 20, seed=3))
    assert a != orjson.dumps(generate(40, 20, seed=4))


@pytest.mark.parametrize(("nodes", "per_node", "variety"), [
    (1, 0, True), (1, 5, True), (7, 30, True), (25, 12, False), (60, 30, True),
    (30, 110, True),
])
def test_requested_counts(nodes: int, per_node: int, variety: bool) -> None:
    snap = generate(nodes, per_node, seed=1, variety=variety)
    assert snap["apiVersion"] == "v1"
    assert snap["kind"] == "List"
    k = kinds(snap)
    assert k["Node"] == nodes
    assert k["Pod"] == nodes * per_node
    assert k["ClusterInfo"] == 1
    assert snap["items"][-1]["kind"] == "ClusterInfo"
    scheduled = Counter(o["spec"].get("nodeName") for o in snap["items"] if o["kind"] == "Pod")
    scheduled.pop(None, None)
    assert max(scheduled.values(), default=0) <= per_node


def test_uniform_cluster_has_no_rule_breakers() -> None:
    facts_nodes = [o for o in generate(30, 20, seed=2, variety=False)["items"]
                   if o["kind"] == "Node"]
    for node in facts_nodes:
        labels = node["metadata"]["labels"]
        assert labels["provisioner.cast.ai/managed-by"] == "cast.ai"
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"] == "containerd://2.0.5"
        assert not node["spec"].get("unschedulable")


def test_references_resolve() -> None:
    """Owners, claims and volumes point at objects that are in the snapshot."""
    snap = generate(50, 30, seed=5)
    by_uid = {o["metadata"]["uid"]: o for o in snap["items"] if "uid" in o["metadata"]}
    claims = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
              for o in snap["items"] if o["kind"] == "PersistentVolumeClaim"}
    pvs = {o["metadata"]["name"] for o in snap["items"] if o["kind"] == "PersistentVolume"}
    for o in snap["items"]:
        for ref in o["metadata"].get("ownerReferences", []):
            if ref["kind"] == "Rollout":  # Argo's CRD is not in the kubectl get list
                continue
            assert by_uid[ref["uid"]]["metadata"]["name"] == ref["name"]
            assert by_uid[ref["uid"]]["kind"] == ref["kind"]
        if o["kind"] == "Pod":
            for v in o["spec"].get("volumes", []):
                if "persistentVolumeClaim" in v:
                    key = (o["metadata"]["namespace"], v["persistentVolumeClaim"]["claimName"])
                    assert key in claims
        if o["kind"] == "PersistentVolumeClaim" and o["status"]["phase"] == "Bound":
            assert o["spec"]["volumeName"] in pvs


def test_no_object_is_shared() -> None:
    """Every pod owns its tree: a caller may edit one object without touching another, and
    YAML output never needs anchors (kubectl prints none)."""
    seen: set[int] = set()
    stack: list[Any] = [generate(30, 30, seed=6)]
    while stack:
        x = stack.pop()
        if isinstance(x, dict | list):
            assert id(x) not in seen
            seen.add(id(x))
            stack.extend(x.values() if isinstance(x, dict) else x)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFacts]:
    path = tmp_path_factory.mktemp("synth") / "cluster.json"
    assert main(["--nodes", "200", "--pods-per-node", "30", "--seed", "11", "-o",
                 str(path)]) == 0
    assert path.read_bytes().startswith(b"{")
    yield read(path)


def test_generated_json_reads_without_diagnostics(generated: ClusterFacts) -> None:
    assert len(generated.nodes) == 200
    assert len(generated.pods) == 200 * 30
    assert generated.info.platform == "eks"
    assert generated.info.region == "us-east-1"
    assert {n.network_mode for n in generated.nodes} == {"standard", "custom"}
    assert {n.architecture for n in generated.nodes} == {"amd64", "arm64"}


def test_generated_covers_owner_and_volume_kinds(generated: ClusterFacts) -> None:
    assert {p.owner_kind for p in generated.pods} == set(OwnerKind)
    assert volume_kinds(generated) == set(VolumeKind)


def test_generated_requests_leave_room(generated: ClusterFacts) -> None:
    cpu: Counter[str] = Counter()
    mem: Counter[str] = Counter()
    for p in generated.pods:
        if p.node and p.phase == "Running":
            cpu[p.node] += p.cpu_millis
            mem[p.node] += p.memory_bytes
    for n in generated.nodes:
        assert cpu[n.name] <= 0.95 * n.cpu_millis, n.name
        assert mem[n.name] <= 0.95 * n.memory_bytes, n.name
    assert sum(cpu.values()) <= 0.7 * sum(n.cpu_millis for n in generated.nodes)


def test_yaml_output_reads_without_diagnostics(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    assert main(["--nodes", "6", "--pods-per-node", "8", "--format", "yaml", "-o",
                 str(path)]) == 0
    facts = read(path)
    assert (len(facts.nodes), len(facts.pods)) == (6, 48)
    assert all(n.created.endswith("Z") for n in facts.nodes)  # quoted, not a YAML datetime


# ---------------------------------------------------------------------------- example

@pytest.fixture(scope="module")
def example() -> ClusterFacts:
    return read(EXAMPLE)


def test_example_is_what_the_script_writes(tmp_path: Path) -> None:
    out = tmp_path / "cluster.yaml"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make-example.py"), "-o",
                    str(out)], check=True, capture_output=True)
    assert out.read_bytes() == EXAMPLE.read_bytes(), "rerun scripts/make-example.py"


def test_example_shape(example: ClusterFacts) -> None:
    info = example.info
    assert (info.name, info.platform, info.region) == ("shop-prod", "eks", "us-east-1")
    assert info.kubernetes_version.startswith("v1.31.4-eks-")
    assert not info.prefix_delegation
    assert not any("kubernetes.io/role/cni" in s.tags for s in info.subnets)
    assert len(example.nodes) >= 30
    assert len(example.pods) >= 200
    assert {n.zone for n in example.nodes} == {"us-east-1a", "us-east-1b"}
    assert {n.architecture for n in example.nodes} == {"amd64", "arm64"}
    node_subnets = {n.labels.get("topology.cast.ai/subnet-id") for n in example.nodes} - {None}
    assert len(node_subnets) == 3
    assert {n.generation_set for n in example.nodes} >= {
        "gen5-intel", "gen6-intel", "gen6-graviton", "gen3-intel"}
    custom = [n for n in example.nodes if n.network_mode == "custom"]
    assert custom and set(example.eniconfigs) >= {n.eniconfig for n in custom}
    assert any("live.cast.ai/custom-network" not in n.labels for n in custom)
    assert any(n.unschedulable and n.labels.get("lifecycle.livepolicy.io/drain") == "true"
               for n in example.nodes)
    assert any(n.created < ts(NOW - 90 * 86_400) for n in example.nodes)
    assert {0, 1, 2} <= {d.disruptions_allowed for d in example.pdbs}


def test_example_nodes_break_each_node_rule_once(example: ClusterFacts) -> None:
    nodes = example.nodes
    assert sum("provisioner.cast.ai/managed-by" not in n.labels for n in nodes) == 1
    assert sum(n.image_family != "FAMILY_AL2023" for n in nodes) == 1
    assert sum(n.runtime_version.startswith("1.") for n in nodes) == 1
    assert sum(not n.ready for n in nodes) == 1
    feature = "feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI"
    m5 = [n for n in nodes if n.instance_type == "m5.2xlarge"
          and "feature.node.kubernetes.io/cpu-cpuid.AVX512F" in n.labels]
    assert {feature in n.labels for n in m5} == {True, False}
    assert any(t.key == "dedicated" and t.value == "batch" for n in nodes for t in n.taints)


def test_example_covers_every_owner_and_volume_kind(example: ClusterFacts) -> None:
    assert {p.owner_kind for p in example.pods} == set(OwnerKind)
    assert volume_kinds(example) == set(VolumeKind)
    custom = [p for p in example.pods if p.owner_kind is OwnerKind.CUSTOM]
    assert {p.owner_api for p in custom} == {"argoproj.io/v1alpha1/Rollout"}


def test_example_triggers_every_pod_rule(example: ClusterFacts) -> None:
    pods = example.pods
    assert any(c.tty for p in pods for c in p.containers)
    assert any(c.extended_resources.get("nvidia.com/gpu") for p in pods for c in p.containers)
    assert any(p.labels.get("autoscaling.cast.ai/live-migration-disabled") == "true"
               for p in pods)
    assert any(p.labels.get("autoscaling.cast.ai/removal-disabled") == "true" for p in pods)
    assert any(len(p.containers) > 1 and p.owner_kind is not OwnerKind.DAEMONSET for p in pods)
    assert any(p.init_containers and p.owner_kind is not OwnerKind.DAEMONSET for p in pods)
    assert any(p.phase == "Pending" and not p.node for p in pods)
    assert any(p.node_selector for p in pods)
    assert any(p.affinity.terms and p.owner_kind is not OwnerKind.DAEMONSET for p in pods)
    assert any(t.key == "dedicated" for p in pods for t in p.tolerations)
    labelled = [p for p in pods if p.labels.get(MIGRATION_ENABLED) == "true"]
    assert len(labelled) >= 10
    # Some pods carry the label from an earlier assessment but no longer qualify.
    assert any(v.kind is VolumeKind.HOSTPATH for p in labelled for v in p.volumes)
    assert any("autoscaling.cast.ai/live-migration-disabled" in p.labels for p in labelled)


def test_example_nodes_have_room(example: ClusterFacts) -> None:
    cpu: Counter[str] = Counter()
    mem: Counter[str] = Counter()
    for p in example.pods:
        if p.node and p.phase == "Running":
            cpu[p.node] += p.cpu_millis
            mem[p.node] += p.memory_bytes
    for n in example.nodes:
        assert cpu[n.name] <= 0.7 * n.cpu_millis, n.name
        assert mem[n.name] <= 0.7 * n.memory_bytes, n.name
    assert EXAMPLE.stat().st_size < 1_500_000
    assert b"&id0" not in EXAMPLE.read_bytes()
