"""Fixtures of the real-node tests: one two-node cluster for the session, the Helm chart
installed on it from the image built here, and a podserver Deployment per test.

The cluster is tests/support/nodeenv.py (real kubelets, containerds, runc, CRIU); nothing
is faked. Its teardown must leave nothing behind, which the session fixture checks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.kube.test_chart_render import CHART, helm
from tests.support.nodeenv import NODES, NodeTestEnv, leftovers, livepolicy_image

ROOT = Path(__file__).resolve().parents[2]
POLICIES = Path(__file__).parent / "policies"
RELEASE, NAMESPACE = "lp", "livepolicy"
PORT = 7000  # podserver
SOURCE, DESTINATION = NODES[0].name, NODES[1].name


@pytest.fixture(scope="session")
def cluster() -> Iterator[NodeTestEnv]:
    env = NodeTestEnv(images=[livepolicy_image()])
    env.start()
    try:
        yield env
    finally:
        env.stop()
    left = leftovers()
    assert not left, f"the node environment left {left}"


def chart_values(env: NodeTestEnv) -> dict[str, Any]:
    """The chart's defaults but for what this cluster lacks: no kube-proxy (pods reach the
    apiserver at its address, not the `kubernetes` Service IP) and agent certificates
    naming the node IPs (agents are called by IP)."""
    assert env.kube is not None
    port = env.kube.server.rsplit(":", 1)[1]
    api_env = [{"name": "KUBERNETES_SERVICE_HOST", "value": env.kube.address},
               {"name": "KUBERNETES_SERVICE_PORT", "value": port}]
    return {
        "agent": {"tls": {"ipAddresses": [n.ip for n in NODES]}, "extraEnv": api_env,
                  "kubelet": {"restoreTimeoutSeconds": 30}},
        "controller": {"extraEnv": api_env},
        "policies": {"files": {p.name: p.read_text() for p in sorted(POLICIES.glob("*.yaml"))}},
    }


def kubectl_env(env: NodeTestEnv) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(env.kubeconfig_path)}


@pytest.fixture(scope="session")
def chart(cluster: NodeTestEnv, tmp_path_factory: pytest.TempPathFactory) -> NodeTestEnv:
    values = tmp_path_factory.mktemp("chart") / "values.yaml"
    with values.open("w") as f:
        YAML().dump(chart_values(cluster), f)
    helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
         "--values", str(values), "--kubeconfig", str(cluster.kubeconfig_path))
    cluster.wait(lambda: len(agents_ready(cluster)) == len(NODES), "agents Ready on both nodes",
                 timeout=120)
    cluster.wait(lambda: lease_holder(cluster) is not None, "a controller leader", timeout=60)
    return cluster


def pods(env: NodeTestEnv, namespace: str, selector: str) -> list[dict[str, Any]]:
    body = env.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
    return list(body["items"])


def ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions") or []
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conds)


def agents_ready(env: NodeTestEnv) -> dict[str, str]:
    """Node -> agent pod name, of the agents that are Running and Ready."""
    return {p["spec"]["nodeName"]: p["metadata"]["name"] for p in pods(
        env, NAMESPACE, "app.kubernetes.io/component%3Dagent") if ready(p)}


def lease_holder(env: NodeTestEnv) -> str | None:
    lease = env.get(f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/"
                    "livepolicy-controller")
    holder = (lease or {}).get("spec", {}).get("holderIdentity")
    return str(holder) if holder else None


@dataclass
class Workload:
    """A podserver Deployment: one replica with its count and start token in memory."""

    env: NodeTestEnv
    name: str

    def pods(self) -> list[dict[str, Any]]:
        return [p for p in pods(self.env, "default", f"app%3D{self.name}")
                if not p["metadata"].get("deletionTimestamp")]

    def pod(self) -> dict[str, Any]:
        (pod,) = self.pods()
        return pod

    def ask(self, *lines: str) -> list[str]:
        """Send request lines to the pod's server (from the host, over the bridge)."""
        ip = self.pod()["status"]["podIP"]
        with socket.create_connection((ip, PORT), timeout=5) as s:
            s.sendall("".join(f"{line}\n" for line in lines).encode())
            f = s.makefile("r")
            return [f.readline().strip() for _ in lines]

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self.ask("STATS")[0]))


def deployment(name: str) -> dict[str, Any]:
    """podserver from the livepolicy image, preferring the source pool (preferred, not
    required: a required selector would pin it there and the planner would refuse)."""
    prefer = {"weight": 100, "preference": {"matchExpressions": [
        {"key": "livepolicy.io/test-pool", "operator": "In", "values": ["source"]}]}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name, "workload": "podserver"}},
                              "spec": {
                     "affinity": {"nodeAffinity": {
                         "preferredDuringSchedulingIgnoredDuringExecution": [prefer]}},
                     "containers": [{
                         "name": "server", "image": "docker.io/library/livepolicy:0.1.0",
                         "imagePullPolicy": "Never",
                         "command": ["python3", "-I", "-m", "livepolicy.lab.podserver",
                                     "--port", str(PORT)]}]}}}}


@pytest.fixture()
def workload(chart: NodeTestEnv) -> Iterator[Workload]:
    name = f"podserver-{uuid.uuid4().hex[:6]}"
    chart.create("/apis/apps/v1/namespaces/default/deployments", deployment(name))
    w = Workload(chart, name)
    chart.wait(lambda: len(w.pods()) == 1 and ready(w.pod()), f"{name} Ready", timeout=90)
    assert w.pod()["spec"]["nodeName"] == SOURCE
    # The controller (the chart's, in the cluster) marks it eligible.
    chart.wait(lambda: w.pod()["metadata"].get("labels", {}).get(
        "live.cast.ai/migration-enabled") == "true", "the controller's label", timeout=60)
    yield w
    assert chart.kube is not None
    chart.kube.request("DELETE", f"/apis/apps/v1/namespaces/default/deployments/{name}",
                       {"propagationPolicy": "Foreground"})
    chart.wait(lambda: not pods(chart, "default", f"app%3D{name}"), f"{name} gone", timeout=90)


def livepolicy(env: NodeTestEnv, *args: str,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / ".venv" / "bin" / "livepolicy"), *args],
                          capture_output=True, text=True, env=kubectl_env(env), cwd=ROOT,
                          timeout=timeout, check=False)


def plan_and_apply(env: NodeTestEnv, tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`livepolicy plan --cluster kube` then `livepolicy apply` (agents from the chart's
    DaemonSet): the plan and apply's JSON events."""
    planned = livepolicy(env, "plan", "--cluster", "kube", "--policies", str(POLICIES),
                         "--out", str(tmp / "plan.json"))
    assert planned.returncode == 0, planned.stdout + planned.stderr
    doc = json.loads((tmp / "plan.json").read_text())
    applied = livepolicy(env, "apply", str(tmp / "plan.json"), "--state-dir",
                         str(tmp / "state"), "--json")
    events = [json.loads(line) for line in applied.stdout.splitlines() if line.startswith("{")]
    assert events and events[-1]["type"] == "change_summary", applied.stdout + applied.stderr
    return doc, events


def wait_for(probe: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
