"""Fixtures of the real-node tests: one two-node cluster for the session, the Helm chart
installed on it from the image built here, and a podserver Deployment per test.

The cluster is tests/support/nodeenv.py (real kubelets, containerds, runc, CRIU); nothing
is faked. Its teardown must leave nothing behind, which the session fixture checks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
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
    naming the node IPs (agents are called by IP); and keepPodAddress, which its nodes
    are set up for."""
    assert env.kube is not None
    port = env.kube.server.rsplit(":", 1)[1]
    api_env = [{"name": "KUBERNETES_SERVICE_HOST", "value": env.kube.address},
               {"name": "KUBERNETES_SERVICE_PORT", "value": port}]
    return {
        "agent": {"tls": {"ipAddresses": [n.ip for n in NODES]}, "extraEnv": api_env,
                  # One L2 segment, livepolicy-ipam on both nodes (tests/support/nodeenv.py).
                  "kubelet": {"restoreTimeoutSeconds": 30,
                              "keepPodAddress": {"enabled": True}}},
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


def plan(env: NodeTestEnv, tmp: Path) -> dict[str, Any]:
    """`livepolicy plan --cluster kube` into tmp/plan.json: the plan."""
    planned = livepolicy(env, "plan", "--cluster", "kube", "--policies", str(POLICIES),
                         "--out", str(tmp / "plan.json"))
    assert planned.returncode == 0, planned.stdout + planned.stderr
    return dict(json.loads((tmp / "plan.json").read_text()))


def parse_events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def apply(env: NodeTestEnv, tmp: Path, state: str = "state") -> list[dict[str, Any]]:
    """`livepolicy apply tmp/plan.json --state-dir tmp/<state>` (agents from the chart's
    DaemonSet): its JSON events, ending with the change summary."""
    applied = livepolicy(env, "apply", str(tmp / "plan.json"), "--state-dir",
                         str(tmp / state), "--json")
    events = parse_events(applied.stdout)
    assert events and events[-1]["type"] == "change_summary", applied.stdout + applied.stderr
    return events


def plan_and_apply(env: NodeTestEnv, tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`livepolicy plan --cluster kube` then `livepolicy apply`: the plan and apply's JSON
    events."""
    doc = plan(env, tmp)
    return doc, apply(env, tmp)


class ApplyProcess:
    """`livepolicy apply --json` running in the background, its events read as they come
    (to act at a chosen phase: kill an agent, SIGKILL apply itself)."""

    def __init__(self, env: NodeTestEnv, tmp: Path, state: str = "state") -> None:
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "livepolicy"), "apply", str(tmp / "plan.json"),
             "--state-dir", str(tmp / state), "--json"], env=kubectl_env(env), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.events: list[dict[str, Any]] = []

    def until(self, probe: Any) -> dict[str, Any]:
        """Read events until one satisfies `probe`; that event."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))
                if probe(self.events[-1]):
                    return self.events[-1]
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise AssertionError(f"apply ended ({self.proc.wait()}) before the awaited event: "
                             f"{self.events[-3:]} {err}")

    def until_phase(self, name: str) -> dict[str, Any]:
        return self.until(lambda e: e.get("phase") == name and e["type"] == "apply_progress")

    def kill(self) -> None:
        """SIGKILL: no rollback, no journal record, the lock released only by death."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.close()

    def finish(self, timeout: float = 300) -> list[dict[str, Any]]:
        out, err = self.proc.communicate(timeout=timeout)
        self.events += parse_events(out)
        assert self.events and self.events[-1]["type"] == "change_summary", (
            self.events[-3:], err)
        return self.events

    def close(self) -> None:
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def journal(state: Path) -> list[dict[str, Any]]:
    """Every record of apply's journal(s) under a --state-dir, in order."""
    out: list[dict[str, Any]] = []
    for path in sorted(state.rglob("journal.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def phases(state: Path) -> list[tuple[int, str]]:
    """(attempt, phase) of every phase record of the journal."""
    return [(int(r.get("attempt", 0)), str(r["phase"])) for r in journal(state)
            if r.get("kind") == "phase"]


class PodWatch:
    """Every pod name of a workload seen while it runs (a ReplicaSet replacement shows)."""

    def __init__(self, w: Workload) -> None:
        self.w, self.seen, self.stop = w, set[str](), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.seen |= {p["metadata"]["name"] for p in pods(
                self.w.env, "default", f"app%3D{self.w.name}")}
            self.seen |= {p["metadata"]["name"] for p in restored_copies(self.w.env)}
            self.stop.wait(0.1)

    def __enter__(self) -> PodWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


RESTORED_FROM = "livepolicy.io/restored-from-uid"  # the copy's label until the commit


def restored_copies(env: NodeTestEnv) -> list[dict[str, Any]]:
    """Restored copies not (yet) handed over: pods of `default` with the copy's label."""
    return pods(env, "default", RESTORED_FROM)


def checkpoint_images(env: NodeTestEnv, node: str) -> list[str]:
    """Checkpoint images the agent imported into a node's containerd and did not remove."""
    return [ref for ref in env.node(node).ctr("images", "ls", "-q").split()
            if "livepolicy/checkpoint-" in ref]


def assert_exactly_once(w: Workload, watch: PodWatch, source: dict[str, Any], node: str,
                        token: str, count: int) -> dict[str, Any]:
    """One non-terminating pod of the workload, on `node`; its process is the source's
    (request `count` answers with the count going on and the same start token); no pod
    ever appeared but the source, the final pod and at most one restored copy, now gone;
    no copy and no checkpoint image is left. The pod."""
    pod = w.pod()
    assert pod["spec"]["nodeName"] == node, pod["spec"]["nodeName"]
    after = w.ask(f"REQ {count}")[0].split()
    assert after[2] == str(count) and after[3] == token, after
    src_name, final = source["metadata"]["name"], pod["metadata"]["name"]
    extra = watch.seen - {src_name, final}
    assert len(extra) <= 1 and all(e.startswith(f"{src_name}-") for e in extra), watch.seen
    for name in extra | ({src_name} - {final}):
        wait_for(lambda n=name: w.env.get(f"/api/v1/namespaces/default/pods/{n}") is None,
                 f"pod {name} deleted", timeout=60)
    assert not restored_copies(w.env)
    for n in NODES:
        assert not checkpoint_images(w.env, n.name), n.name
    return pod


def agent_pod(env: NodeTestEnv, node: str) -> dict[str, Any]:
    (pod,) = [p for p in pods(env, NAMESPACE, "app.kubernetes.io/component%3Dagent")
              if p["spec"].get("nodeName") == node]
    return pod


def restarts(pod: dict[str, Any]) -> int:
    return sum(int(s.get("restartCount") or 0)
               for s in pod.get("status", {}).get("containerStatuses") or [])


def agent_pid(env: NodeTestEnv, node: str) -> int:
    """The host PID of the agent process on `node`: its container's task in the node's
    containerd (`ctr tasks ls`)."""
    (status,) = agent_pod(env, node)["status"]["containerStatuses"]
    cid = str(status["containerID"]).removeprefix("containerd://")
    for line in env.node(node).ctr("tasks", "ls").splitlines()[1:]:
        task, pid, state = line.split()[:3]
        if task == cid and state == "RUNNING":
            return int(pid)
    raise AssertionError(f"no running task {cid} on {node}")


def kill_agent(env: NodeTestEnv, node: str) -> int:
    """SIGKILL the chart's agent process on `node` (the kubelet restarts its container)."""
    pid = agent_pid(env, node)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"agent" in cmdline and node.encode() in cmdline, cmdline
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_agents_ready(env: NodeTestEnv, timeout: float = 120) -> None:
    """Both agents Running and Ready (another test may need them)."""
    env.wait(lambda: len(agents_ready(env)) == len(NODES), "agents Ready on both nodes",
             timeout=timeout)


def wait_for(probe: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
