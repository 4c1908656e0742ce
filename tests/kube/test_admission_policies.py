"""The chart's ValidatingAdmissionPolicies on the real kube-apiserver, with the
ServiceAccounts' own tokens: the controller may change the migration-enabled label and
nothing else of a pod; the kubelet agent may create only restored copies shaped as the
kubelet runtime makes them, and hand over to a copy elsewhere only what it carried parked;
an agent writes its certificate (agent.tls.identity perNode) on its own pod only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from livepolicy.agent.tls_identity import CERT_ANNOTATION, ensure_identity, publish
from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.labels import LabelEdit, LabelWriter
from livepolicy.kube.resources import NODES, PODS, Resource
from tests.kube.test_chart_apiserver import (
    KINDS,
    RBAC_KINDS,
    apply,
    delete_quietly,
    delete_rendered,
    drop_namespace,
    make_namespace,
    pod_bound_token,
)
from tests.kube.test_chart_render import render
from tests.support.envtest import KubeTestEnv

NS = "lp-adm"
SHOP = "lp-adm-shop"
CONTROLLER_SA = "lp-livepolicy-controller"
AGENT_SA = "lp-livepolicy-agent"
KEY = "live.cast.ai/migration-enabled"
ROLES = Resource("Role", "rbac.authorization.k8s.io/v1", "roles")
ROLE_BINDINGS = Resource("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings")


def refused(call: Callable[[], object], why: str) -> str:
    with pytest.raises(KubeError) as err:
        call()
    assert err.value.status in (403, 422), err.value
    assert why in err.value.message, err.value.message
    return err.value.message


def wait_enforced(probe: Callable[[], object], why: str) -> None:
    """A new policy is enforced once the API server has loaded it (about a second)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            probe()
        except KubeError as exc:
            assert why in exc.message, exc.message
            return
        assert time.monotonic() < deadline, "the policy was never enforced"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def chart(kube: KubeClient, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[list[dict[str, Any]]]:
    """The chart's ServiceAccounts, RBAC and both admission policies, applied for real."""
    make_namespace(kube, NS)
    make_namespace(kube, SHOP)
    objs = [o for o in render(tmp_path_factory.mktemp("adm"), namespace=NS)
            if o["kind"] in RBAC_KINDS or o["kind"].startswith("ValidatingAdmissionPolicy")]
    for obj in objs:
        apply(kube, obj, dry_run=False)
    yield objs
    delete_rendered(kube, objs)
    drop_namespace(kube, SHOP)
    drop_namespace(kube, NS)


def test_policies_compile(kube: KubeClient, chart: list[dict[str, Any]]) -> None:
    """The API server compiled every expression when the fixture applied them (a CEL
    error is a 422 there) and stored them as rendered. (Type-check warnings are written
    to .status by kube-controller-manager, which this test control plane does not run.)"""
    vap = KINDS["ValidatingAdmissionPolicy"]
    policies = [o for o in chart if o["kind"] == "ValidatingAdmissionPolicy"]
    assert sorted(o["metadata"]["name"] for o in policies) == [
        "lp-livepolicy-agent-own-certificate", "lp-livepolicy-agent-own-node",
        "lp-livepolicy-controller-label-only"]
    for obj in policies:
        stored = kube.get(vap, obj["metadata"]["name"])
        assert stored["spec"]["validations"] == obj["spec"]["validations"]
        assert stored["spec"]["variables"] == obj["spec"]["variables"]


# -- the controller ------------------------------------------------------------------------
@pytest.fixture()
def shop_pod(kube: KubeClient, chart: list[dict[str, Any]]) -> Iterator[str]:
    name = "web-0"
    kube.create(PODS, {"metadata": {
        "name": name, "labels": {"app": "web", KEY: "true"},
        "annotations": {"team": "shop"}, "finalizers": ["example.com/keep"],
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                             "uid": "7e5c1c4e-0000-4000-8000-000000000001"}]},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]}}, SHOP)
    yield name
    kube.patch(PODS, name, {"metadata": {"finalizers": None}}, SHOP)
    delete_quietly(kube, PODS, name, SHOP)


def test_controller_changes_only_the_label(kube: KubeClient, kube_env: KubeTestEnv,
                                           shop_pod: str, tmp_path: Path) -> None:
    token = kube_env.service_account_token(NS, CONTROLLER_SA)
    kc = kube_env.token_kubeconfig(token, tmp_path / "controller")
    with KubeClient.from_config(str(kc)) as sa:
        def patch(body: Any, kind: str = "strategic") -> object:
            return sa.patch(PODS, shop_pod, body, SHOP, patch_type=kind)

        wait_enforced(lambda: sa.patch(PODS, shop_pod, {"metadata": {"labels": {"app": "x"}}},
                                       SHOP, dry_run=True),
                      "may only change the pod label")
        # What the controller writes: LabelWriter's guarded patches, removal and setting.
        writer = LabelWriter(sa)
        pod = kube.get(PODS, shop_pod, SHOP)
        out = writer.patch(LabelEdit(SHOP, shop_pod, KEY, None),
                           pod["metadata"]["resourceVersion"])
        assert KEY not in out["metadata"]["labels"]
        out = writer.patch(LabelEdit(SHOP, shop_pod, KEY, "true"),
                           out["metadata"]["resourceVersion"])
        assert out["metadata"]["labels"][KEY] == "true"
        (outcome,) = LabelWriter(sa, dry_run=True).run(
            [LabelEdit(SHOP, shop_pod, KEY, None)], {}, lambda fresh: [])
        assert outcome.result == "would-apply"
        also = (f"may only change the pod label {KEY}; "
                "this request also changes ")
        for body, what in (
                ({"metadata": {"labels": {"app": "other"}}}, "other labels"),
                ({"metadata": {"labels": {"new": "x"}}}, "other labels"),
                ({"metadata": {"labels": {"app": None}}}, "other labels"),
                ({"metadata": {"labels": {KEY: None, "app": "x"}}}, "other labels"),
                ({"metadata": {"annotations": {"team": "other"}}}, "annotations"),
                ({"metadata": {"annotations": {"new": "x"}}}, "annotations"),
                ({"metadata": {"finalizers": None}}, "finalizers"),
                ({"metadata": {"ownerReferences": None}}, "ownerReferences"),
                ({"spec": {"activeDeadlineSeconds": 5}}, "spec"),
                ({"spec": {"tolerations": [{"key": "x", "operator": "Exists"}]}}, "spec"),
                ({"spec": {"containers": [{"name": "web", "image": "evil"}]}}, "spec")):
            refused(lambda b=body: patch(b), also + what)  # type: ignore[misc]
        refused(lambda: patch({"spec": {"activeDeadlineSeconds": 5},
                               "metadata": {"annotations": {"x": "y"}}}),
                also + "spec, annotations")
        refused(lambda: patch({"metadata": {"labels": {KEY: "false"}}}),
                'to "true" or removes it, never to "false"')
        refused(lambda: patch([{"op": "replace", "path": "/spec/activeDeadlineSeconds",
                                "value": 1}], "json"), also + "spec")
        refused(lambda: sa.replace(PODS, {**kube.get(PODS, shop_pod, SHOP),
                                          "spec": {**kube.get(PODS, shop_pod, SHOP)["spec"],
                                                   "activeDeadlineSeconds": 9}}, SHOP),
                "forbidden")  # RBAC: no update verb at all
    assert kube.get(PODS, shop_pod, SHOP)["metadata"]["labels"] == {"app": "web", KEY: "true"}


def test_controller_policy_holds_even_if_rbac_is_widened(
        kube: KubeClient, kube_env: KubeTestEnv, shop_pod: str, tmp_path: Path) -> None:
    """Defence in depth: bound a Role allowing create, delete and pods/status, the
    controller is still refused by the policy."""
    role = {"metadata": {"name": "too-much"}, "rules": [
        {"apiGroups": [""], "resources": ["pods", "pods/status"],
         "verbs": ["create", "delete", "patch"]}]}
    binding = {"metadata": {"name": "too-much"}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "too-much"},
        "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_SA, "namespace": NS}]}
    kube.create(ROLES, role, SHOP)
    kube.create(ROLE_BINDINGS, binding, SHOP)
    token = kube_env.service_account_token(NS, CONTROLLER_SA)
    kc = kube_env.token_kubeconfig(token, tmp_path / "controller")
    try:
        with KubeClient.from_config(str(kc)) as sa:
            msg = "may only change the pod label live.cast.ai/migration-enabled, not "
            wait_enforced(lambda: sa.delete(PODS, shop_pod, SHOP, dry_run=True),
                          msg + "delete pods")
            refused(lambda: sa.create(PODS, {"metadata": {"name": "x"}, "spec": {
                "containers": [{"name": "x", "image": "x"}]}}, SHOP), msg + "create pods")
            refused(lambda: sa.patch(PODS, shop_pod, {"status": {"phase": "Failed"}}, SHOP,
                                     subresource="status"), msg + "the status subresource")
    finally:
        delete_quietly(kube, ROLE_BINDINGS, "too-much", SHOP)
        delete_quietly(kube, ROLES, "too-much", SHOP)


# -- the kubelet agent ---------------------------------------------------------------------
SOURCE_UID = "3f1d2c4b-1111-4222-8333-444455556666"
MID = "m-0001"
TAG = "0123abcd"  # the copy's name suffix; its images' tags start with it


def copy_pod(node: str, source: str = "web-src", **changes: Any) -> dict[str, Any]:
    """A restored copy as livepolicy/agent/runtimes/kubelet_pods.restored_pod makes it."""
    parked_labels = json.dumps({"app": "web", "pod-template-hash": "abc"}, sort_keys=True)
    parked_owners = json.dumps([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                 "uid": "9a9a9a9a-0000-4000-8000-000000000009",
                                 "controller": True}])
    pod: dict[str, Any] = {
        "metadata": {"name": f"{source}-{TAG}",
                     "labels": {"livepolicy.io/restored-from-uid": SOURCE_UID},
                     "annotations": {"livepolicy.io/restored-from": f"{SHOP}/{source}",
                                     "livepolicy.io/migration": MID,
                                     "livepolicy.io/state-sha256": "ab" * 32,
                                     "livepolicy.io/parked-labels": parked_labels,
                                     "livepolicy.io/parked-owner-references": parked_owners,
                                     "team": "shop"}},
        "spec": {"nodeName": node, "containers": [
            {"name": "web", "imagePullPolicy": "Never",
             "image": f"localhost/livepolicy/checkpoint-{SHOP}-{source}-web:{TAG}00000000"}]}}
    for path, value in changes.items():
        where: dict[str, Any] = pod
        *parents, last = path.split("__")
        for p in parents:
            where = where[p] if not p.isdigit() else where[int(p)]  # type: ignore[index]
        if value is None:
            where.pop(last, None)
        else:
            where[last] = value
    return pod


def test_agent_creates_only_faithful_restored_copies(
        kube: KubeClient, kube_env: KubeTestEnv, chart: list[dict[str, Any]],
        tmp_path: Path) -> None:
    a, b = "lp-adm-a", "lp-adm-b"
    made: list[str] = []
    try:
        for node in (a, b):  # the API server copies zone and region onto their pods
            kube.create(NODES, {"metadata": {"name": node, "labels": {
                "topology.kubernetes.io/zone": f"us-east-1{node[-1]}",
                "topology.kubernetes.io/region": "us-east-1"}}})
        agent = kube.create(PODS, {"metadata": {"name": "agent-a"}, "spec": {
            "nodeName": a, "serviceAccountName": AGENT_SA,
            "containers": [{"name": "agent", "image": "livepolicy"}]}}, NS)
        kube.create(PODS, copy_pod(b, "other"), SHOP)  # a copy on B, made by B's agent
        made.append(f"other-{TAG}")
        kc = kube_env.token_kubeconfig(pod_bound_token(kube_env, agent), tmp_path / "a")
        with KubeClient.from_config(str(kc)) as sa:
            wait_enforced(lambda: sa.create(PODS, copy_pod(b, "probe"), SHOP, dry_run=True),
                          "own node")

            def create(pod: dict[str, Any]) -> object:
                return sa.create(PODS, pod, SHOP)

            lacks = ("the agent creates only restored copies as the kubelet runtime makes "
                     "them; this one lacks: ")
            for changes, what in (
                    ({"metadata__labels": {"livepolicy.io/restored-from-uid": SOURCE_UID,
                                           "app": "web"}}, "labels other than"),
                    ({"metadata__labels": {"livepolicy.io/restored-from-uid": "0f0e"}},
                     "labels other than"),
                    ({"metadata__ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                        "uid": "9a9a9a9a-0000-4000-8000-000000000009"}]}, "ownerReferences"),
                    ({"metadata__finalizers": ["x.io/y"]}, "finalizers"),
                    ({"metadata__name": "anything"}, "a name SOURCE-<8 hex>"),
                    ({"metadata__annotations__livepolicy.io/restored-from": "default/web-src"},
                     "a name SOURCE-<8 hex>"),
                    ({"metadata__annotations__livepolicy.io/migration": None},
                     "annotation livepolicy.io/migration"),
                    ({"metadata__annotations__livepolicy.io/state-sha256": "x"},
                     "annotation livepolicy.io/state-sha256"),
                    ({"metadata__annotations__livepolicy.io/parked-labels": None},
                     "annotations livepolicy.io/parked-labels and parked-owner-references"),
                    ({"spec__containers__0__image": "docker.io/library/busybox"},
                     "containers running their local checkpoint image"),
                    ({"spec__containers__0__image":
                      f"localhost/livepolicy/checkpoint-{SHOP}-web-src-web:ffffffff00000000"},
                     "containers running their local checkpoint image"),
                    ({"spec__containers__0__imagePullPolicy": "IfNotPresent"},
                     "containers running their local checkpoint image"),
                    ({"spec__initContainers": [{"name": "i", "image": "busybox"}]},
                     "no init or ephemeral containers"),
                    ({"spec__containers__0__startupProbe": {"exec": {"command": ["true"]}}},
                     "no startupProbe or postStart hook"),
            ):
                refused(lambda c=changes: create(copy_pod(a, **c)),  # type: ignore[misc]
                        lacks + what)
            baseline = "a restored copy may not hold what Pod Security baseline refuses: "
            cases: list[tuple[dict[str, Any], str]] = [
                    ({"spec__hostNetwork": True}, "host namespaces"),
                    ({"spec__hostPID": True}, "host namespaces"),
                    ({"spec__containers__0__securityContext": {"privileged": True}},
                     "privileged"),
                    ({"spec__containers__0__securityContext": {
                        "capabilities": {"add": ["SYS_ADMIN"]}}}, "capabilities beyond"),
                    ({"spec__volumes": [{"name": "h", "hostPath": {"path": "/"}}]},
                     "hostPath volumes"),
                    ({"spec__containers__0__ports": [{"containerPort": 80, "hostPort": 80}]},
                     "hostPort"),
                    ({"spec__securityContext": {"seccompProfile": {"type": "Unconfined"}}},
                     "seccomp Unconfined"),
                    ({"spec__securityContext": {"sysctls": [{"name": "kernel.msgmax",
                                                             "value": "1"}]}},
                     "unsafe sysctls"),
            ]
            for changes, what in cases:
                refused(lambda c=changes: create(copy_pod(a, **c)),  # type: ignore[misc]
                        baseline + what)
            # What the kubelet runtime makes is accepted, with baseline-safe extras.
            made_copy = create(copy_pod(a, spec__containers__0__securityContext={
                "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}}))
            made.append(f"web-src-{TAG}")
            # PodTopologyLabels admission added the node's zone and region (Kubernetes
            # >= 1.35): the policy lets them be, as on real nodes.
            assert made_copy["metadata"]["labels"][  # type: ignore[index]
                "topology.kubernetes.io/zone"] == "us-east-1a"
            # The commit on another node (B's copy, A the source): the parked labels and
            # owners, nothing else.
            other = f"other-{TAG}"
            handover = {"metadata": {
                "labels": {"app": "web", "pod-template-hash": "abc",
                           "livepolicy.io/restored-from-uid": None},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": "web", "controller": True,
                                     "uid": "9a9a9a9a-0000-4000-8000-000000000009"}],
                "annotations": {"livepolicy.io/parked-labels": None,
                                "livepolicy.io/parked-owner-references": None}}}
            over = ("the agent changes a restored copy on another node only to hand its "
                    "parked labels and owners over; this request also sets: ")
            refused(lambda: sa.patch(PODS, other, {"metadata": {"labels": {
                "app": "web", "role": "admin"}}}, SHOP), over + "labels that were not parked")
            refused(lambda: sa.patch(PODS, other, {"metadata": {"ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": b,
                "uid": "00000000-0000-4000-8000-000000000000"}]}}, SHOP),
                "owner references that were not parked")
            refused(lambda: sa.patch(PODS, other, {"metadata": {"annotations": {
                "team": "x"}}}, SHOP), "annotations other than removing the parked ones")
            refused(lambda: sa.patch(PODS, other, {"spec": {"activeDeadlineSeconds": 5}},
                                     SHOP), "and the metadata of restored copies")
            out = sa.patch(PODS, other, handover, SHOP)
            assert out["metadata"]["labels"] == {
                "app": "web", "pod-template-hash": "abc",
                "topology.kubernetes.io/zone": "us-east-1b",
                "topology.kubernetes.io/region": "us-east-1"}
            assert "livepolicy.io/parked-labels" not in out["metadata"]["annotations"]
            refused(lambda: sa.patch(PODS, f"web-src-{TAG}", {"spec": {
                "activeDeadlineSeconds": 5}}, SHOP), "never changes a pod's spec")
    finally:
        for name in made:
            delete_quietly(kube, PODS, name, SHOP)
        delete_quietly(kube, PODS, "agent-a", NS)
        for node in (a, b):
            delete_quietly(kube, NODES, node, None)


# -- every agent's own certificate (agent.tls.identity perNode) ----------------------------
def _agent_pod(kube: KubeClient, name: str, node: str, sa: str) -> dict[str, Any]:
    return kube.create(PODS, {"metadata": {"name": name, "annotations": {"team": "infra"}},
                              "spec": {"nodeName": node, "serviceAccountName": sa,
                                       "containers": [{"name": "agent",
                                                       "image": "livepolicy"}]}}, NS)


def test_agent_publishes_its_certificate_on_its_own_pod_only(
        kube: KubeClient, kube_env: KubeTestEnv, chart: list[dict[str, Any]],
        tmp_path: Path) -> None:
    """apply trusts the certificate on an agent's pod for that node, so the pod's own
    token may write it there and nowhere else: not on another agent's pod of the same
    node, not on a restored copy it creates."""
    node = "lp-adm-cert"
    identity = ensure_identity(tmp_path / "state", node, ["198.18.0.7"])
    try:
        kube.create(NODES, {"metadata": {"name": node}})
        mine = _agent_pod(kube, "agent-mine", node, AGENT_SA)
        _agent_pod(kube, "agent-other", node, AGENT_SA)
        kc = kube_env.token_kubeconfig(pod_bound_token(kube_env, mine), tmp_path / "mine")
        with KubeClient.from_config(str(kc)) as sa:
            own = "an agent writes the annotation livepolicy.io/agent-certificate on its own pod"
            wait_enforced(lambda: publish(sa, f"{NS}/agent-other", identity), own)
            refused(lambda: publish(sa, f"{NS}/agent-other", identity),
                    own + " only (its pod is agent-mine)")
            publish(sa, f"{NS}/agent-mine", identity)  # what the agent does at start
            published = kube.get(PODS, "agent-mine", NS)["metadata"]["annotations"]
            assert published == {"team": "infra", CERT_ANNOTATION: identity.certificate}
            refused(lambda: sa.create(PODS, copy_pod(node, **{
                f"metadata__annotations__{CERT_ANNOTATION}": identity.certificate}), SHOP),
                own)
        assert CERT_ANNOTATION not in (
            kube.get(PODS, "agent-other", NS)["metadata"].get("annotations") or {})
    finally:
        for name in ("agent-mine", "agent-other"):
            delete_quietly(kube, PODS, name, NS)
        delete_quietly(kube, NODES, node, None)


def test_criu_agent_writes_nothing_but_its_certificate(
        kube: KubeClient, kube_env: KubeTestEnv, chart: list[dict[str, Any]],
        tmp_path: Path) -> None:
    """The criu and sim runtimes call no pod API but this one: their Role allows `patch`
    on pods of the release namespace, and the policy narrows it to the certificate
    annotation of the agent's own pod."""
    objs = [o for o in render(tmp_path, {"agent": {"runtime": "criu"}}, namespace=NS,
                              release="lpc")
            if o["kind"] in RBAC_KINDS or o["kind"].startswith("ValidatingAdmissionPolicy")]
    node, sa_name = "lp-adm-criu", "lpc-livepolicy-agent"
    identity = ensure_identity(tmp_path / "state", node, [])
    try:
        for obj in objs:
            apply(kube, obj, dry_run=False)
        kube.create(NODES, {"metadata": {"name": node}})
        mine = _agent_pod(kube, "criu-agent", node, sa_name)
        kc = kube_env.token_kubeconfig(pod_bound_token(kube_env, mine), tmp_path / "criu")
        with KubeClient.from_config(str(kc)) as sa:
            only = "the criu agent changes nothing of a pod but the annotation"
            wait_enforced(lambda: sa.patch(PODS, "criu-agent", {"metadata": {"labels": {
                "x": "y"}}}, NS, dry_run=True), only)
            for body in ({"metadata": {"annotations": {"team": "other"}}},
                         {"metadata": {"labels": {"x": "y"}}},
                         {"metadata": {"annotations": {CERT_ANNOTATION: "x"}, "labels": {
                             "x": "y"}}},
                         {"spec": {"activeDeadlineSeconds": 5}}):
                refused(lambda b=body: sa.patch(PODS, "criu-agent", b, NS),  # type: ignore[misc]
                        only)
            publish(sa, f"{NS}/criu-agent", identity)
            refused(lambda: sa.patch(PODS, "web-0", {"metadata": {"labels": {"x": "y"}}},
                                     SHOP), "forbidden")  # RBAC: its namespace only
        assert kube.get(PODS, "criu-agent", NS)["metadata"]["annotations"][
            CERT_ANNOTATION] == identity.certificate
    finally:
        delete_quietly(kube, PODS, "criu-agent", NS)
        delete_quietly(kube, NODES, node, None)
        delete_rendered(kube, objs)
