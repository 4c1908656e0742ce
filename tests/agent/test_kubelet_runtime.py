"""Whole migrations with the kubelet runtime: two real agents (HTTP, encryption), the real
kube-apiserver holding the pods, a fake kubelet (HTTPS, recorded answers) and a fake `ctr`.

No kubelet or containerd runs here, so what a node would do on its own is played by the
test: the source pod is created with a Running status, and a "destination kubelet"
thread marks the restored pod Running once the API holds it (as the kubelet reports a
started container). Everything the runtime itself does goes through the real protocols.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from livepolicy.agent import AgentClient, AgentConfig, new_key
from livepolicy.agent.client import AgentError
from livepolicy.agent.config import KubeletOptions
from livepolicy.agent.runtimes import kubelet_pods as kp
from livepolicy.agent.runtimes import make_runtime
from livepolicy.agent.runtimes.kubelet import KubeletRuntime
from livepolicy.agent.runtimes.kubelet_api import KubeletAuth, KubeletClient
from livepolicy.agent.runtimes.kubelet_image import ContainerdImages, ContainerdInfo
from livepolicy.agent.server import AgentServer
from livepolicy.kube.client import KubeClient
from livepolicy.kube.resources import NAMESPACES, PODS
from tests.agent.test_kubelet_fakes import FakeCtr, FakeKubelet, fake_ctr, fake_kubelet
from tests.support.envtest import KubeTestEnv

__all__ = ["fake_ctr", "fake_kubelet"]


def _running_status(pod: dict[str, Any]) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"phase": "Running", "containerStatuses": [
        {"name": c["name"], "ready": True, "restartCount": 0, "image": c["image"],
         "imageID": "", "containerID": f"containerd://{secrets.token_hex(32)}",
         "state": {"running": {"startedAt": now}}} for c in pod["spec"]["containers"]]}


def _set_running(kube: KubeClient, pod: dict[str, Any]) -> None:
    fresh = kube.get(PODS, pod["metadata"]["name"], pod["metadata"]["namespace"])
    fresh["status"] = _running_status(fresh)
    kube.replace(PODS, fresh, fresh["metadata"]["namespace"], subresource="status")


@pytest.fixture
def namespace(kube: KubeClient) -> Iterator[str]:
    name = f"kr-{secrets.token_hex(4)}"
    kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": name}})
    yield name
    kube.delete(NAMESPACES, name)


def _source_pod(kube: KubeClient, ns: str, kubelet: FakeKubelet) -> dict[str, Any]:
    """Pod `web` running on node-1, known to node-1's (fake) kubelet."""
    container = {"image": "registry.example/web:1", "resources": {"requests": {
        "memory": "64Mi"}}, "startupProbe": {"exec": {"command": ["true"]}},
        "lifecycle": {"postStart": {"exec": {"command": ["true"]}},
                      "preStop": {"exec": {"command": ["true"]}}}}
    pod = kube.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "web", "labels": {"app": "web"}, "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f",
            "uid": "0b0c9a52-0000-4000-8000-000000000001", "controller": True}]},
        "spec": {"nodeName": "node-1", "initContainers": [
            {"name": "init", "image": "registry.example/init:1"}],
            "containers": [{"name": "app", **container}, {"name": "sidecar", **container}]}},
        ns)
    _set_running(kube, pod)
    kubelet.pods.add((ns, "web"))
    return kube.get(PODS, "web", ns)


class _DestinationKubelet:
    """Plays the destination node's kubelet: reports restored pods as running."""

    def __init__(self, kube: KubeClient, ns: str, node: str, *, start: bool = True) -> None:
        self.kube, self.ns, self.node, self.start = kube, ns, node, start
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            if not self.start:
                continue
            for pod in self.kube.list(PODS, namespace=self.ns).items:
                if pod["spec"].get("nodeName") == self.node and \
                        (pod.get("status") or {}).get("phase") != "Running":
                    _set_running(self.kube, pod)

    def __enter__(self) -> _DestinationKubelet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def agents(tmp_path: Path, kube: KubeClient, fake_kubelet: FakeKubelet, fake_ctr: FakeCtr
           ) -> Iterator[Callable[..., tuple[AgentClient, AgentClient, str, str]]]:
    servers: list[AgentServer] = []

    def start(restore: bool = True) -> tuple[AgentClient, AgentClient, str, str]:
        out = []
        for node in ("node-1", "node-2"):
            runtime = KubeletRuntime(
                state_dir=tmp_path / node, node=node,
                kubelet=KubeletClient(fake_kubelet.url, KubeletAuth(
                    ca_file=fake_kubelet.ca_file, token_file=fake_kubelet.token_file)),
                containerd=ContainerdImages(str(fake_ctr.path), config_file=fake_ctr.config),
                pods=kp.KubePodApi(kube), checkpoints_dir=fake_kubelet.checkpoints,
                architecture="amd64", restore_timeout_s=10,
                containerd_info=None if restore else ContainerdInfo(
                    "2.2.0", False, "config.toml does not set "
                    "enable_experimental_restore_via_create = true"))
            config = replace(AgentConfig(node=node, token=secrets.token_urlsafe(24),
                                         state_dir=tmp_path / node, port=0))
            server = AgentServer(config, runtime=runtime, poll_interval=0.01)
            server.start()
            servers.append(server)
            out.append((AgentClient(server.url, config.token, timeout=30), server.url,
                        config.token))
        (src, _, _), (dst, dst_url, dst_token) = out
        return src, dst, dst_url, dst_token

    yield start
    for s in servers:
        s.stop()


def _prepare(src: AgentClient, dst: AgentClient, dst_url: str, pod: dict[str, Any],
             mid: str) -> None:
    key = new_key()
    ref = f"{pod['metadata']['namespace']}/web"
    uid = pod["metadata"]["uid"]
    src.prepare(mid, role="source", pod=ref, uid=uid, memory_bytes=0, key=key, peer=dst_url)
    dst.prepare(mid, role="destination", pod=ref, uid=uid, memory_bytes=0, key=key,
                peer="http://127.0.0.1:1")


def _ship(src: AgentClient, dst: AgentClient, dst_url: str, dst_token: str,
          pod: dict[str, Any], mid: str) -> None:
    """Prepare both sides, checkpoint the source and send its image to the destination."""
    _prepare(src, dst, dst_url, pod, mid)
    src.checkpoint(mid, round=0, final=True)
    src.transfer(mid, destination=dst_url, token=dst_token)


def test_migration_commits_and_hands_the_pod_over(
        agents: Callable[..., tuple[AgentClient, AgentClient, str, str]], kube: KubeClient,
        namespace: str, fake_kubelet: FakeKubelet, fake_ctr: FakeCtr) -> None:
    src, dst, dst_url, dst_token = agents()
    pod = _source_pod(kube, namespace, fake_kubelet)
    with _DestinationKubelet(kube, namespace, "node-2"):
        mid = "lp-test-m1-a0"
        _prepare(src, dst, dst_url, pod, mid)
        final = src.checkpoint(mid, round=0, final=True)
        assert final["frozen"] is True and final["bytes"] > 400_000
        # One kubelet call per container, authenticated; the plaintext archives are gone.
        paths = [c["path"] for c in fake_kubelet.calls]
        assert paths == [f"/checkpoint/{namespace}/web/app",
                         f"/checkpoint/{namespace}/web/sidecar"]
        assert all(c["auth"] == f"Bearer {fake_kubelet.token}" for c in fake_kubelet.calls)
        assert list(fake_kubelet.checkpoints.iterdir()) == []
        ids = [s["containerID"].split("://")[1] for s in pod["status"]["containerStatuses"]]
        assert [c for c in fake_ctr.commands() if c[:2] == ["tasks", "pause"]] == [
            ["tasks", "pause", i] for i in ids]
        assert src.status(mid)["pod_state"] == "frozen"

        src.transfer(mid, destination=dst_url, token=dst_token)
        restored = dst.restore(mid)
        assert restored["state"] == "running"
        imports = [c for c in fake_ctr.calls() if "image" in c]
        assert sorted(c["container"] for c in imports) == ["app", "sidecar"]
        assert all(c["members"][-1] == "index.json" for c in imports)

        copy = kp.restored_name("web", mid)
        body = kube.get(PODS, copy, namespace)
        assert body["spec"]["nodeName"] == "node-2"
        assert "initContainers" not in body["spec"]
        for c in body["spec"]["containers"]:
            assert c["image"].startswith(f"localhost/livepolicy/checkpoint-{namespace}-web-")
            assert c["imagePullPolicy"] == "Never"
            assert "startupProbe" not in c and "postStart" not in c["lifecycle"]
        # Before the commit: no Service or ReplicaSet sees the copy.
        assert body["metadata"]["labels"] == {kp.RESTORED_FROM: pod["metadata"]["uid"]}
        assert "ownerReferences" not in body["metadata"]

        v = dst.verify(mid)
        assert v["ok"] is True, v
        removed = [c[2] for c in fake_ctr.commands() if c[:2] == ["images", "rm"]]
        assert sorted(removed) == sorted(c["image"] for c in imports)

        src.commit(mid)
        dst.commit(mid)
        assert kube.get_optional(PODS, "web", namespace) is None
        after = kube.get(PODS, copy, namespace)
        assert after["metadata"]["labels"] == {"app": "web"}
        assert after["metadata"]["ownerReferences"][0]["name"] == "web-7d9f"
        assert kp.A_LABELS not in after["metadata"]["annotations"]
        kills = [c for c in fake_ctr.commands() if c[:2] == ["tasks", "kill"]]
        assert [k[-1] for k in kills] == ids


def test_rollback_resumes_the_source_and_deletes_the_copy(
        agents: Callable[..., tuple[AgentClient, AgentClient, str, str]], kube: KubeClient,
        namespace: str, fake_kubelet: FakeKubelet, fake_ctr: FakeCtr) -> None:
    src, dst, dst_url, dst_token = agents()
    pod = _source_pod(kube, namespace, fake_kubelet)
    with _DestinationKubelet(kube, namespace, "node-2"):
        mid = "lp-test-m2-a0"
        _ship(src, dst, dst_url, dst_token, pod, mid)
        dst.restore(mid)
        dst.rollback(mid)
        src.rollback(mid)
        assert kube.get_optional(PODS, kp.restored_name("web", mid), namespace) is None
        assert kube.get(PODS, "web", namespace)["metadata"]["uid"] == pod["metadata"]["uid"]
        ids = [s["containerID"].split("://")[1] for s in pod["status"]["containerStatuses"]]
        assert [c for c in fake_ctr.commands() if c[:2] == ["tasks", "resume"]] == [
            ["tasks", "resume", i] for i in ids]
        assert src.list_pods()["pods"][0]["state"] == "running"


def test_restore_that_never_runs_is_undone(
        agents: Callable[..., tuple[AgentClient, AgentClient, str, str]], kube: KubeClient,
        namespace: str, fake_kubelet: FakeKubelet) -> None:
    src, dst, dst_url, dst_token = agents()
    pod = _source_pod(kube, namespace, fake_kubelet)
    with _DestinationKubelet(kube, namespace, "node-2", start=False):
        mid = "lp-test-m3-a0"
        _ship(src, dst, dst_url, dst_token, pod, mid)
        with pytest.raises(AgentError) as err:
            dst.restore(mid)
        assert err.value.code == "restore_failed" and "not running" in str(err.value)
        assert kube.get_optional(PODS, kp.restored_name("web", mid), namespace) is None


def test_destination_without_restore_support_refuses_clearly(
        agents: Callable[..., tuple[AgentClient, AgentClient, str, str]], kube: KubeClient,
        namespace: str, fake_kubelet: FakeKubelet) -> None:
    src, dst, dst_url, dst_token = agents(restore=False)
    pod = _source_pod(kube, namespace, fake_kubelet)
    mid = "lp-test-m4-a0"
    _ship(src, dst, dst_url, dst_token, pod, mid)
    with pytest.raises(AgentError) as err:
        dst.restore(mid)
    assert err.value.code == "restore_unavailable"
    assert "enable_experimental_restore_via_create" in str(err.value)


def test_kubelet_without_checkpoint_gate_fails_the_checkpoint_not_the_pod(
        agents: Callable[..., tuple[AgentClient, AgentClient, str, str]], kube: KubeClient,
        namespace: str, fake_kubelet: FakeKubelet, fake_ctr: FakeCtr) -> None:
    src, dst, dst_url, _ = agents()
    pod = _source_pod(kube, namespace, fake_kubelet)
    fake_kubelet.answer = "404_gate_off"
    mid = "lp-test-m5-a0"
    _prepare(src, dst, dst_url, pod, mid)
    with pytest.raises(AgentError) as err:
        src.checkpoint(mid, round=0, final=True)
    assert err.value.code == "checkpoint_unavailable"
    assert "ContainerCheckpoint" in str(err.value)
    assert not [c for c in fake_ctr.commands() if c[:2] == ["tasks", "pause"]]
    src.rollback(mid)
    assert src.list_pods()["pods"][0]["state"] == "running"


def test_agent_config_builds_the_runtime(kube_env: KubeTestEnv, tmp_path: Path,
                                         fake_kubelet: FakeKubelet, fake_ctr: FakeCtr) -> None:
    """`--runtime kubelet` as `make_runtime` builds it from the agent's config."""
    options = KubeletOptions(url=fake_kubelet.url, ca_file=fake_kubelet.ca_file,
                             token_file=fake_kubelet.token_file,
                             checkpoints_dir=fake_kubelet.checkpoints, ctr=str(fake_ctr.path),
                             containerd_config=fake_ctr.config,
                             kubeconfig=kube_env.kubeconfig_path)
    config = AgentConfig(node="node-1", token=secrets.token_urlsafe(24),
                         state_dir=tmp_path / "agent", runtime="kubelet", kubelet=options)
    config.validate()
    runtime = make_runtime(config, threading.Event())
    assert isinstance(runtime, KubeletRuntime) and runtime.info.restore
    assert runtime.features().dirty_tracking is False
    caps = (tmp_path / "agent" / "runtime-capabilities.json").read_text()
    assert '"containerd_version": "2.1.4"' in caps and '"restore": true' in caps
    bad = replace(config, kubelet=replace(options, url="http://x", client_cert=Path("c")))
    assert len(bad.problems()) == 2
