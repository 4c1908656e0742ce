"""The controller against the real kube-apiserver: continuous assessment.

It converges like `livepolicy label`, then keeps the label true as the cluster changes:
a new eligible pod gets it; a pod recreated with a hostPath volume, the pods of a node
that loses its managed label, and pods whose policy stops covering them lose it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from livepolicy.kube.client import KubeClient
from livepolicy.kube.resources import NODES, PODS
from tests.controller.support import (
    KEY,
    converged,
    create_running,
    fresh_pod,
    labelled,
    metric,
    options,
    pending_changes,
    running,
    scrape,
    seed_synth,
    wait_for,
)
from tests.kube.seed import SEED_MANAGER
from tests.support.envtest import KubeTestEnv

pytestmark = pytest.mark.kube
MANAGED = "provisioner.cast.ai/managed-by"


@pytest.fixture()
def cluster(empty_cluster: KubeClient) -> Iterator[KubeClient]:
    seed_synth(empty_cluster)
    yield empty_cluster
    empty_cluster.hooks.clear()


def test_controller_keeps_labels_true(cluster: KubeClient, kube_env: KubeTestEnv) -> None:
    kc = str(kube_env.kubeconfig_path)
    planned = pending_changes(cluster)
    adds = sum(1 for _, action in planned if action == "add")
    removes = len(planned) - adds
    assert adds and removes
    with running(kc, options()) as (ctl, log):
        first = wait_for("the first convergence", lambda: converged(cluster))
        assert ctl.assessments >= 1
        ns, name = sorted(first)[0].split("/")
        template = cluster.get(PODS, name, ns)

        # A new eligible pod (same shape, same node) gets the label.
        new = fresh_pod(template, "controller-new-1")
        new["metadata"]["labels"].pop(KEY, None)
        create_running(cluster, new, template["status"])
        wait_for("the new pod's label", lambda: f"{ns}/controller-new-1" in labelled(cluster))

        # Recreated with a hostPath volume (and the stale label): it loses it.
        cluster.delete(PODS, "controller-new-1", ns, grace_period=0)
        wait_for("the deletion", lambda: cluster.get_optional(PODS, "controller-new-1", ns)
                 is None)
        bad = fresh_pod(template, "controller-new-1")
        bad["metadata"]["labels"][KEY] = "true"
        bad["spec"].setdefault("volumes", []).append(
            {"name": "host", "hostPath": {"path": "/var/lib/x"}})
        bad["spec"]["containers"][0].setdefault("volumeMounts", []).append(
            {"name": "host", "mountPath": "/x"})
        create_running(cluster, bad, template["status"])
        wait_for("the hostPath pod to lose the label",
                 lambda: f"{ns}/controller-new-1" not in labelled(cluster)
                 and converged(cluster))

        # A node that loses its managed label takes the label off all its pods.
        node = template["spec"]["nodeName"]
        before = labelled(cluster)
        on_node = {k for k in before
                   if cluster.get(PODS, k.split("/")[1], k.split("/")[0])["spec"]
                   .get("nodeName") == node}
        assert on_node
        cluster.patch(NODES, node, {"metadata": {"labels": {MANAGED: None}}},
                      field_manager=SEED_MANAGER)
        after = wait_for("the unmanaged node's pods to lose the label",
                         lambda: converged(cluster))
        assert not (on_node & after)

        status, text = scrape(ctl)
        assert status == 200
        assert metric(text, "livepolicy_controller_is_leader") == 1
        assert metric(text, "livepolicy_controller_label_writes_total", action="add",
                      result="applied") == adds + 1 + len(after - before)
        # Pods elsewhere whose only destination was that node lose it too.
        assert metric(text, "livepolicy_controller_label_writes_total", action="remove",
                      result="applied") == removes + 1 + len(before - after)
        assert metric(text, "livepolicy_controller_label_conflicts_total") == 0
        assert metric(text, "livepolicy_controller_eligible_pods") == len(after)
        assert metric(text, "livepolicy_controller_last_success_timestamp_seconds") > 0
        assert metric(text, "livepolicy_controller_assessment_duration_seconds_count") >= 3
        assert log.grep("label ") and log.grep("assessed")
