"""Kubernetes Events for migration phases: the mapping (pure), and `apply --kube-events`
against the real kube-apiserver, including an identity that may not post Events."""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from livepolicy.apply.events import make_event
from livepolicy.apply.kube_events import KubeEventSink, pod_events
from livepolicy.cli.main import cli
from livepolicy.kube.client import KubeClient
from livepolicy.kube.events import EventRecorder, PodEvent
from livepolicy.kube.resources import EVENTS, NAMESPACES, PODS
from tests.conftest import ROOT
from tests.support.envtest import KubeTestEnv

BASIC = ROOT / "tests" / "cases" / "basic"
PLANNED = {"web-5d8f-aaaaa": "a3", "web-5d8f-bbbbb": "a3", "db-0": "a2"}
M = {"id": "m00001", "pod": "shop/web-5d8f-aaaaa", "from": "a1", "to": "a3"}


# -- the mapping -------------------------------------------------------------------------
@pytest.mark.parametrize(("event", "expected"), [
    (make_event("apply_start", "", migration=M, attempt=0),
     [("MigrationStarted", "Migrate", "Normal", "a1 -> a3")]),
    (make_event("apply_progress", "", migration=M, phase="transferring", bytes=42, rounds=1),
     [("Checkpointed", "Checkpoint", "Normal", "42 bytes")]),
    (make_event("apply_progress", "", migration=M, phase="verifying"),
     [("Restored", "Restore", "Normal", "restored on a3")]),
    (make_event("apply_complete", "", migration=M, outcome="migrated", freeze_ms=12,
                duration_ms=90),
     [("MigrationCommitted", "Commit", "Normal", "frozen 12 ms")]),
    (make_event("apply_errored", "", "error", migration=M, outcome="rolled_back",
                phase="restoring", error="boom", on_failure="evict"),
     [("RolledBack", "Rollback", "Warning", "boom"),
      ("Evicted", "Evict", "Warning", "onFailure: evict")]),
    (make_event("apply_errored", "", "error", migration=M, outcome="failed",
                phase="committing", error="lost"),
     [("MigrationFailed", "Migrate", "Warning", "re-run apply")]),
    (make_event("apply_progress", "", migration=M, phase="restoring"), []),
    (make_event("apply_skipped", "", migration=M, outcome="skipped"), []),
    (make_event("version", "livepolicy"), []),
])
def test_engine_events_map_to_pod_events(event: dict[str, Any],
                                         expected: list[tuple[str, str, str, str]]) -> None:
    got = pod_events(event, {"m00001": "uid-1"})
    assert [(e.reason, e.action, e.type) for e in got] == [x[:3] for x in expected]
    for e, (_, _, _, words) in zip(got, expected, strict=True):
        assert (e.namespace, e.pod, e.uid) == ("shop", "web-5d8f-aaaaa", "uid-1")
        assert words in e.note


def test_recovered_events_say_so() -> None:
    (e,) = pod_events(make_event("apply_complete", "", migration=M, outcome="migrated",
                                 recovered=True))
    assert "recovered" in e.note


# -- against the apiserver ---------------------------------------------------------------
def _case(tmp_path: Path) -> tuple[Path, Path]:
    cluster = tmp_path / "cluster.yaml"
    shutil.copy(BASIC / "cluster.yaml", cluster)
    return cluster, BASIC / "policies.yaml"


def _pods(kube: KubeClient) -> dict[str, str]:
    if kube.get_optional(NAMESPACES, "shop") is None:
        kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": "shop"}})
    kube.delete_collection(EVENTS, "shop")
    out = {}
    for name in PLANNED:
        pod = kube.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name}, "spec": {"nodeName": "a1", "containers": [
                {"name": "app", "image": "registry.example/app:1"}]}}, "shop")
        out[name] = pod["metadata"]["uid"]
    return out


def _events(kube: KubeClient) -> dict[str, list[dict[str, Any]]]:
    by_pod: dict[str, list[dict[str, Any]]] = {}
    for e in kube.list(EVENTS, namespace="shop").items:
        by_pod.setdefault(e["regarding"]["name"], []).append(e)
    return by_pod


def _apply(cluster: Path, policies: Path, state: Path, kubeconfig: Path,
           *extra: str) -> Any:
    return CliRunner().invoke(cli, [
        "apply", "--cluster", str(cluster), "--agents", "sim", "--policies", str(policies),
        "--yes", "--json",
        "--state-dir", str(state), "--sim-time-scale", "0.001", "--kube-events",
        "--kubeconfig", str(kubeconfig), *extra])


def test_apply_posts_events_on_each_migrated_pod(kube_env: KubeTestEnv,
                                                 empty_cluster: KubeClient,
                                                 tmp_path: Path) -> None:
    kube = empty_cluster
    _pods(kube)
    cluster, policies = _case(tmp_path)
    result = _apply(cluster, policies, tmp_path / "state", kube_env.kubeconfig_path)
    assert result.exit_code == 0, result.output
    assert '"migrated": 3' in result.output
    by_pod = _events(kube)
    assert set(by_pod) == set(PLANNED)
    for name, dest in PLANNED.items():
        events = sorted(by_pod[name], key=lambda e: e["eventTime"])
        assert [e["reason"] for e in events] == [
            "MigrationStarted", "Checkpointed", "Restored", "MigrationCommitted"]
        for e in events:
            assert e["regarding"]["kind"] == "Pod" and e["regarding"]["namespace"] == "shop"
            assert e["reportingController"] == "livepolicy.io/apply"
            assert e["reportingInstance"] and e["type"] == "Normal"
        committed = events[-1]
        assert f"a1 -> {dest}" in committed["note"] and "frozen" in committed["note"]
        assert committed["action"] == "Commit"
    kube.delete_collection(EVENTS, "shop")


def test_rolled_back_migration_gets_a_warning(kube_env: KubeTestEnv,
                                              empty_cluster: KubeClient,
                                              tmp_path: Path) -> None:
    kube = empty_cluster
    _pods(kube)
    cluster, policies = _case(tmp_path)
    faults = tmp_path / "faults.yaml"
    faults.write_text("- {node: a3, phase: restore, mode: fail, migration: m00001}\n")
    result = _apply(cluster, policies, tmp_path / "state", kube_env.kubeconfig_path,
                    "--sim-faults", str(faults))
    assert result.exit_code == 1, result.output
    (warning,) = [e for e in _events(kube)["web-5d8f-aaaaa"] if e["type"] == "Warning"]
    assert warning["reason"] == "RolledBack" and warning["action"] == "Rollback"
    assert "rolled back to a1" in warning["note"] and "injected failure" in warning["note"]
    kube.delete_collection(EVENTS, "shop")


def test_an_identity_without_rbac_does_not_fail_the_apply(
        kube_env: KubeTestEnv, empty_cluster: KubeClient, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    kube = empty_cluster
    _pods(kube)
    token = kube_env.service_account_token("default", "no-events")
    kubeconfig = kube_env.token_kubeconfig(token, tmp_path / "kubeconfig")
    cluster, policies = _case(tmp_path)
    with caplog.at_level(logging.WARNING, logger="livepolicy.kube.events"):
        result = _apply(cluster, policies, tmp_path / "state", kubeconfig)
    assert result.exit_code == 0, result.output
    assert '"migrated": 3' in result.output
    warnings = [r for r in caplog.records if "cannot post Kubernetes Events" in r.message]
    assert len(warnings) == 1 and "forbidden" in warnings[0].message.lower()
    assert _events(kube) == {}


def test_repeats_update_the_series(kube: KubeClient) -> None:
    if kube.get_optional(NAMESPACES, "series") is None:
        kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": "series"}})
    kube.delete_collection(EVENTS, "series")
    recorder = EventRecorder(kube, instance="test")
    sink = KubeEventSink(recorder)
    done = make_event("apply_complete", "", migration={**M, "pod": "series/p"},
                      outcome="migrated", freeze_ms=5)
    for _ in range(3):
        sink.emit(done)
    sink.close()
    (event,) = kube.list(EVENTS, namespace="series").items
    assert event["reason"] == "MigrationCommitted"
    assert event["series"]["count"] == 3 and event["series"]["lastObservedTime"]
    assert (recorder.posted, recorder.updated, recorder.failed) == (1, 2, 0)
    kube.delete_collection(EVENTS, "series")


def test_a_hung_apiserver_never_blocks_the_caller(tmp_path: Path) -> None:
    """An API that accepts connections and never answers: record() stays instant, the
    queue bound drops the surplus, close() gives up after its timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: hung\nclusters:\n- name: hung\n"
        f"  cluster: {{server: 'http://127.0.0.1:{server.getsockname()[1]}'}}\n"
        "users:\n- name: u\n  user: {token: abc}\ncontexts:\n- name: hung\n"
        "  context: {cluster: hung, user: u}\n")
    try:
        with KubeClient.from_config(str(kubeconfig)) as client:
            recorder = EventRecorder(client, queue_size=10)
            started = time.monotonic()
            for i in range(200):
                recorder.record(PodEvent("ns", f"p{i}", "MigrationStarted", "Migrate", "n"))
            assert time.monotonic() - started < 0.5
            assert recorder.dropped >= 189
            t0 = time.monotonic()
            recorder.close(timeout=0.3)
            assert time.monotonic() - t0 < 1.0
    finally:
        stop.set()
        thread.join(5)
        for s in held:
            s.close()
        server.close()
