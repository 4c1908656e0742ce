"""The controller under stress, against the real kube-apiserver: a watch whose version
etcd compacted away (410 Gone: relist, still converge), a pod edited between the read and
the write (conflict: re-read, re-plan, retry), and a leader cut off from the Lease (it
stops writing before the Lease can expire, and comes back when the API does)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from livepolicy.kube.client import Call, KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.lease import is_free, parse_time
from livepolicy.kube.resources import LEASES, PODS
from tests.controller.support import (
    KEY,
    converged,
    labelled,
    metric,
    new_eligible_pod,
    options,
    pending_changes,
    running,
    scrape,
    seed_synth,
    wait_for,
)
from tests.kube.test_label import RaceBeforeWrite
from tests.kube.test_source import _compact_etcd
from tests.support.envtest import KubeTestEnv, kube_test_env

pytestmark = pytest.mark.kube


@pytest.fixture()
def cluster(empty_cluster: KubeClient) -> Iterator[KubeClient]:
    seed_synth(empty_cluster)
    yield empty_cluster
    empty_cluster.hooks.clear()


@pytest.fixture(scope="module")
def uncached_env() -> Iterator[KubeTestEnv]:
    """An apiserver of its own without the watch cache, so a watch reaches etcd. The
    shared one answers watches from its in-memory cache, which keeps every event of the
    last 75 s and so cannot be made to forget a version within a test; etcd can."""
    yield from kube_test_env(extra_apiserver_args=["--watch-cache=false"])


def test_watch_resumes_after_410(uncached_env: KubeTestEnv) -> None:
    """While the pod watch is down, a pod is created and etcd compacted: the watch
    resumes from a version that no longer exists, gets 410, relists and labels the pod."""
    admin = KubeClient.from_config(str(uncached_env.kubeconfig_path))
    client = KubeClient.from_config(str(uncached_env.kubeconfig_path))
    seed_synth(admin)
    state: dict[str, Any] = {"armed": False, "fired": 0, "pod": ""}

    def expire_next_pod_watch(call: Call) -> None:
        if not state["armed"] or call.path != PODS.path() or \
                ("watch", 1) not in call.query:
            return
        state["armed"] = False
        state["fired"] += 1
        state["pod"] = new_eligible_pod(admin, "after-the-gap")  # unseen by the dead watch
        _compact_etcd(uncached_env.etcd_url)
        call.query = [(k, "2" if k == "resourceVersion" else v) for k, v in call.query]

    try:
        with running("", options(watch_timeout=(1, 2)), client) as (ctl, log):
            wait_for("the first convergence", lambda: converged(admin))
            client.hooks.append(expire_next_pod_watch)
            state["armed"] = True
            wait_for("the pod created during the gap to be labelled",
                     lambda: state["pod"] and state["pod"] in labelled(admin))
            assert state["fired"] == 1
            text = scrape(ctl)[1]
            assert metric(text, "livepolicy_controller_watch_restarts_total", kind="Pod",
                          reason="expired") == 1
            assert metric(text, "livepolicy_controller_relists_total", kind="Pod",
                          reason="expired") == 1
            assert metric(text, "livepolicy_controller_relists_total", kind="Pod",
                          reason="initial") == 1
            assert log.grep("relist kind=Pod reason=expired")
            assert wait_for("convergence", lambda: converged(admin))
    finally:
        client.close()
        admin.close()


def test_conflicting_edit_is_reread_and_retried(cluster: KubeClient,
                                                kube_env: KubeTestEnv) -> None:
    target = next(p for p, action in pending_changes(cluster) if action == "add")
    client = KubeClient.from_config(str(kube_env.kubeconfig_path))
    race = RaceBeforeWrite(kube_env, target, {"race.example/touched": "yes"})
    client.hooks.append(race)
    try:
        with running("", options(), client) as (ctl, _log):
            wait_for("convergence", lambda: converged(cluster))
            assert race.fired == 1
            pod = cluster.get(PODS, *reversed(target.split("/")))
            assert (pod["metadata"].get("labels") or {}).get(KEY) == "true"
            assert pod["metadata"]["annotations"]["race.example/touched"] == "yes-1"  # kept
            text = scrape(ctl)[1]
            assert metric(text, "livepolicy_controller_label_conflicts_total") == 1
            assert metric(text, "livepolicy_controller_label_writes_total",
                          result="failed") == 0
    finally:
        client.close()


class Partition:
    """Hook: while `on`, every call about Leases fails as if the API were unreachable."""

    def __init__(self) -> None:
        self.on = False
        self.refused = 0

    def __call__(self, call: Call) -> None:
        if self.on and "/leases" in call.path:
            self.refused += 1
            raise KubeError("cannot reach the Kubernetes API: connection refused (test)")


def test_leader_that_cannot_renew_stops_writing(cluster: KubeClient,
                                                kube_env: KubeTestEnv) -> None:
    client = KubeClient.from_config(str(kube_env.kubeconfig_path))
    cut = Partition()
    client.hooks.append(cut)
    opts = options(lease_duration=6.0)
    try:
        with running("", opts, client) as (ctl, log):
            wait_for("convergence", lambda: converged(cluster))
            cut.on = True
            lost = wait_for("the leader to step down",
                            lambda: not ctl.elector.leader and ctl.lock.last_renewed)
            assert lost
            lease = cluster.get(LEASES, opts.lease_name, opts.namespace)
            renewed = parse_time(lease["spec"]["renewTime"]) or 0.0
            # Stepped down while the Lease was still valid: nobody else could have it yet.
            assert not is_free(lease, time.time()), "stepped down only after the expiry"
            assert time.time() - renewed < opts.lease_duration
            text = scrape(ctl)[1]
            assert metric(text, "livepolicy_controller_is_leader") == 0
            writes = metric(text, "livepolicy_controller_label_writes_total")
            pod = new_eligible_pod(cluster, "during-the-partition")

            def seen_and_due() -> bool:
                due = ctl.debounce.due_at()
                return ctl.stores["Pod"].get(pod) is not None and due is not None and \
                    ctl.heartbeat > due + 0.5

            # The change reached the cache and its assessment is overdue, yet not run.
            wait_for("the change to be seen and left pending", seen_and_due)
            assert pod not in labelled(cluster)
            assert metric(scrape(ctl)[1], "livepolicy_controller_label_writes_total") == writes
            cut.on = False
            wait_for("the leader to come back and label the pod",
                     lambda: pod in labelled(cluster), timeout=30)
            assert ctl.elector.leader and cut.refused > 0
            assert log.grep("standby") and log.grep("leader ")
    finally:
        client.close()


def test_resync_relists_and_reassesses(cluster: KubeClient, kube_env: KubeTestEnv) -> None:
    """Every --resync seconds each kind is listed again and the cluster reassessed; a
    converged cluster gives no writes."""
    with running(str(kube_env.kubeconfig_path), options(resync=3.0)) as (ctl, log):
        wait_for("convergence", lambda: converged(cluster))
        writes = metric(scrape(ctl)[1], "livepolicy_controller_label_writes_total")
        wait_for("a resync of every kind", lambda: all(
            metric(scrape(ctl)[1], "livepolicy_controller_relists_total", kind=r.kind,
                   reason="resync") >= 1 for r in ctl.reflectors), timeout=30)
        wait_for("a resync assessment", lambda: any(
            "resync" in line for line in log.grep("assessed")[1:]), timeout=30)
        assert metric(scrape(ctl)[1], "livepolicy_controller_label_writes_total") == writes
