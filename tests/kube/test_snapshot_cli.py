"""`livepolicy snapshot --cluster kube` exports what `plan --cluster FILE` reads, and the
plan from the file equals the plan from the live cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from ruamel.yaml import YAML

from bench.synth import generate
from livepolicy.cli.kube_cmds import to_yaml
from livepolicy.cli.main import cli
from livepolicy.kube.client import KubeClient
from tests.kube.seed import put_cluster_info, seed, wipe
from tests.support.envtest import KubeTestEnv

pytestmark = pytest.mark.kube

POLICIES = "bench/policies"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def synth_cluster(kube: KubeClient) -> dict[str, Any]:
    """Seeded once for the module; these tests only read."""
    wipe(kube)
    snap = generate(12, 6, seed=5)
    for o in snap["items"]:  # an operator cordoned two arm64 nodes: pods to move
        if o["metadata"].get("name") in ("ip-10-0-0-196.ec2.internal",
                                         "ip-10-0-1-4.ec2.internal"):
            o["spec"]["unschedulable"] = True
    seed(kube, snap["items"])
    info = next(o for o in snap["items"] if o["kind"] == "ClusterInfo")
    put_cluster_info(kube, info, name=info["metadata"]["name"])
    return snap


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    for key in ("fingerprint", "inputs"):
        doc.pop(key)
    doc["cluster"] = {k: v for k, v in doc["cluster"].items() if k != "source"}
    return doc


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_snapshot_then_plan_equals_live_plan(synth_cluster: dict[str, Any],
                                             kube_env: KubeTestEnv, tmp_path: Path,
                                             fmt: str) -> None:
    kc = str(kube_env.kubeconfig_path)
    out = tmp_path / f"cluster.{fmt}"
    r = run("snapshot", "--cluster", "kube", "--kubeconfig", kc, "--format", fmt, "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "12 nodes, 72 pods" in r.output

    live = run("plan", "--cluster", "kube", "--kubeconfig", kc, "--policies", POLICIES, "--json")
    assert live.exit_code == 0, live.output
    from_file = run("plan", "--cluster", str(out), "--policies", POLICIES, "--json")
    assert from_file.exit_code == 0, from_file.output
    live_doc, file_doc = json.loads(live.output), json.loads(from_file.output)
    assert live_doc["cluster"]["source"] == "kube"
    assert file_doc["cluster"]["source"] == str(out)
    assert _comparable(live_doc) == _comparable(file_doc)
    # Not a vacuous equality: the synthetic cluster has work in it.
    summary = live_doc["summary"]
    assert summary["migrations"] > 0
    assert summary["labels_add"] + summary["labels_remove"] > 0


def test_snapshot_shape_on_stdout(synth_cluster: dict[str, Any], kube_env: KubeTestEnv) -> None:
    r = run("snapshot", "--cluster", "kube", "--kubeconfig", str(kube_env.kubeconfig_path),
            "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "List")
    items = doc["items"]
    info = items[0]
    assert (info["apiVersion"], info["kind"]) == ("livepolicy.io/v1alpha1", "ClusterInfo")
    assert info["spec"]["observedAt"].endswith("Z")
    assert info["metadata"]["name"] == "synth-12x6-s5"
    kinds = {(o["apiVersion"], o["kind"]) for o in items[1:]}
    assert {("v1", "Node"), ("v1", "Pod"), ("apps/v1", "ReplicaSet"), ("apps/v1", "Deployment"),
            ("batch/v1", "Job"), ("batch/v1", "CronJob"), ("policy/v1", "PodDisruptionBudget"),
            ("crd.k8s.amazonaws.com/v1alpha1", "ENIConfig")} <= kinds
    assert all("managedFields" not in o["metadata"] for o in items)
    assert all(o["metadata"].get("resourceVersion") for o in items[1:])


def test_snapshot_refuses_files_and_reports_errors(kube_env: KubeTestEnv, tmp_path: Path
                                                   ) -> None:
    r = run("snapshot", "--cluster", "tests/cases/basic/cluster.yaml")
    assert r.exit_code == 1 and "use --cluster kube" in r.output
    bad = tmp_path / "kubeconfig"
    bad.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}))
    r = run("snapshot", "--cluster", "kube", "--kubeconfig", str(kube_env.kubeconfig_path),
            "-o", str(tmp_path / "no-such-dir" / "cluster.yaml"))
    assert r.exit_code == 1 and "cannot write the snapshot" in r.output
    for cmd in ("snapshot", "plan"):
        r = run(cmd, "--cluster", "kube", "--kubeconfig", str(bad))
        assert r.exit_code == 1
        assert "cannot reach the Kubernetes API at https://127.0.0.1:1" in r.output
        assert "Traceback" not in r.output


def test_yaml_output_reads_back_identically() -> None:
    tricky: dict[str, Any] = {
        "strings": ["yes", "No", "on", "y", "1e3", "0o17", "null", "~", "", "a: b", "#x",
                    "- x", "ünï", "x\u2028y", "l1\nl2", "0x1F", "2026-01-01T00:00:00Z", "1.10",
                    "TRUE", "*ref", "&a", "!tag", "%x", "@x", "'q'", '"d"', "\t", "\x85"],
        "scalars": [1, -2, 1.5, True, False, None, {}, []],
        "nested": [[1, [2]], {"k": []}, [{"a": 1, "b": {"c": [1]}}]],
        "keys": {"weird key: x": 1, "kubernetes.io/role/cni": "1", "": "empty", "y": "n"},
    }
    text = to_yaml(tricky)
    assert YAML(typ="safe", pure=True).load(text) == tricky
    snap = generate(3, 4, seed=2)
    assert YAML(typ="safe", pure=True).load(to_yaml(snap)) == snap
    assert "  kind: Node\n" in to_yaml(snap)  # block style, like kubectl
