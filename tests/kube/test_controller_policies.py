"""Policies from a ConfigMap watched through the real API, invalid policies keeping the
last good set, the health endpoints over HTTP, and a dry run that saves nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from livepolicy.controller.policies import load_texts
from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import CONFIGMAPS, PODS
from tests.controller.support import (
    LEASE_NS,
    POLICIES,
    converged,
    ensure_namespace,
    labelled,
    metric,
    options,
    pending_changes,
    running,
    scrape,
    seed_synth,
    wait_for,
)
from tests.support.envtest import KubeTestEnv

pytestmark = pytest.mark.kube
GOOD = (POLICIES / "bench.yaml").read_text()
BROKEN = GOOD.replace("maxParallel: 20", "maxParallel: lots")
# Settings that no node matches: nothing may migrate, so every label must go.
NO_MANAGED_NODES = """apiVersion: livepolicy.io/v1alpha1
kind: Settings
metadata:
  name: settings
spec:
  managedNodeSelector:
    matchLabels:
      example.com/no-such-node: "true"
"""


@pytest.fixture()
def cluster(empty_cluster: KubeClient) -> Iterator[KubeClient]:
    seed_synth(empty_cluster)
    yield empty_cluster
    empty_cluster.hooks.clear()


@pytest.fixture()
def configmap(kube: KubeClient) -> Iterator[str]:
    ensure_namespace(kube)
    name = f"policies-{uuid.uuid4().hex[:6]}"
    kube.create(CONFIGMAPS, {"metadata": {"name": name}, "data": {"bench.yaml": GOOD}},
                LEASE_NS)
    yield name
    try:
        kube.delete(CONFIGMAPS, name, LEASE_NS)
    except KubeError as exc:
        if not exc.not_found:
            raise


def _versions(client: KubeClient) -> dict[str, str]:
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}":
            p["metadata"]["resourceVersion"] for p in client.list(PODS).items}


def _put(client: KubeClient, name: str, data: dict[str, str]) -> None:
    cm = client.get(CONFIGMAPS, name, LEASE_NS)
    cm["data"] = data
    client.replace(CONFIGMAPS, cm, LEASE_NS)


def test_policies_from_a_configmap(cluster: KubeClient, configmap: str,
                                   kube_env: KubeTestEnv) -> None:
    kc = str(kube_env.kubeconfig_path)
    opts = options(policies_dir="", policies_configmap=f"{LEASE_NS}/{configmap}")
    with running(kc, opts) as (ctl, log):
        first = wait_for("the first convergence", lambda: converged(cluster))
        status, body = scrape(ctl, "/readyz")
        assert status == 200, body
        assert "[+]caches synced" in body and "[+]policies 2 policies" in body
        status, body = scrape(ctl, "/healthz")
        assert status == 200 and "[+]loop" in body and "healthz ok" in body, body
        assert scrape(ctl, "/nope")[0] == 404

        # An invalid edit: logged with the key as the file, counted, last good set kept.
        _put(cluster, configmap, {"bench.yaml": BROKEN})
        wait_for("the invalid policies to be reported", lambda: log.grep("policies-invalid"))
        problems = log.grep("policy-problem")
        assert problems and "bench.yaml:13:" in problems[0] and "/spec/budgets" in problems[0]
        status, body = scrape(ctl, "/readyz")
        assert status == 200 and "using the last good set" in body, body
        text = scrape(ctl)[1]
        assert metric(text, "livepolicy_controller_policy_load_errors_total") == 1
        assert metric(text, "livepolicy_controller_policies_valid") == 0
        assert ctl.policies.state.current is not None
        assert sorted(ctl.policies.state.current.policies) == ["drain-cordoned", "retire-old"]
        assert labelled(cluster) == first  # still the good set's labels

        # A valid change that allows nothing: every label goes.
        data = {"bench.yaml": GOOD, "settings.yaml": NO_MANAGED_NODES}
        _put(cluster, configmap, data)
        strict = load_texts(data, "cm")
        wait_for("every label to be removed", lambda: not labelled(cluster)
                 and not pending_changes(cluster, strict))
        text = scrape(ctl)[1]
        assert metric(text, "livepolicy_controller_policies_valid") == 1
        assert metric(text, "livepolicy_controller_eligible_pods") == 0
        assert metric(text, "livepolicy_controller_label_writes_total", action="remove",
                      result="applied") >= len(first)


def test_invalid_policies_from_the_start(cluster: KubeClient, configmap: str,
                                         kube_env: KubeTestEnv) -> None:
    """With no good set ever loaded: not ready, nothing written, and no crash."""
    _put(cluster, configmap, {"bench.yaml": BROKEN})
    before = _versions(cluster)
    opts = options(policies_dir="", policies_configmap=f"{LEASE_NS}/{configmap}")
    with running(str(kube_env.kubeconfig_path), opts) as (ctl, log):
        wait_for("the invalid policies to be reported", lambda: log.grep("policies-invalid"))

        def synced() -> tuple[int, str] | None:
            got = scrape(ctl, "/readyz")
            return got if "[+]caches" in got[1] else None

        status, body = wait_for("caches synced", synced)
        assert status == 503 and "[-]policies none loaded" in body, body
        assert ctl.assessments == 0 and ctl.elector.leader
        assert _versions(cluster) == before
        _put(cluster, configmap, {"bench.yaml": GOOD})
        wait_for("convergence once fixed", lambda: converged(cluster))
        assert scrape(ctl, "/readyz")[0] == 200


def test_dry_run_saves_nothing(cluster: KubeClient, kube_env: KubeTestEnv) -> None:
    planned = pending_changes(cluster)
    versions = _versions(cluster)
    with running(str(kube_env.kubeconfig_path), options(dry_run=True)) as (ctl, log):
        wait_for("every change checked by the server",
                 lambda: metric(scrape(ctl)[1], "livepolicy_controller_label_writes_total",
                                result="would-apply") == len(planned))
        # Another change makes it assess again: only the changed pod's edit is resent
        # (a new resourceVersion), not every edit the server already checked.
        ns, name = planned[0][0].split("/")
        cluster.patch(PODS, name, {"metadata": {"annotations": {"example.com/poke": "1"}}},
                      ns)
        wait_for("the poked pod's edit checked again",
                 lambda: metric(scrape(ctl)[1], "livepolicy_controller_label_writes_total",
                                result="would-apply") == len(planned) + 1)
        text = scrape(ctl)[1]
        assert metric(text, "livepolicy_controller_label_writes_total",
                      result="would-apply") == len(planned) + 1
        assert metric(text, "livepolicy_controller_label_writes_total", result="applied") == 0
    now = _versions(cluster)
    poked = planned[0][0]
    assert {k: v for k, v in now.items() if k != poked} == \
        {k: v for k, v in versions.items() if k != poked}
    assert pending_changes(cluster) == planned
    assert log.grep("would-apply")
