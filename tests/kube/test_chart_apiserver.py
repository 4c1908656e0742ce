"""The Helm chart against the real kube-apiserver: every rendered object passes a
server-side dry-run (server-side apply, `dryRun=All`), Pod Security admission judges the
pod templates, `helm install`/`upgrade` keep the generated secrets, and the controller's
and agent's ServiceAccounts can do exactly what their RBAC says: every granted verb
works (SelfSubjectAccessReview and real calls) and everything else stays forbidden.

Everything lives in namespaces of this module's own and is deleted at the end (the test
apiserver has no namespace controller, so namespaces are finalized by hand).
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from livepolicy.agent.runtimes.kubelet import image_ref
from livepolicy.agent.runtimes.kubelet_pods import handover_patch, restored_name, restored_pod
from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import (
    CONFIGMAPS,
    CRDS,
    CRONJOBS,
    DAEMONSETS,
    DEPLOYMENTS,
    ENICONFIGS,
    EVENTS,
    JOBS,
    LEASES,
    NAMESPACES,
    NODES,
    PDBS,
    PODS,
    PVCS,
    PVS,
    REPLICASETS,
    STATEFULSETS,
    Resource,
)
from tests.kube.seed import ensure_eniconfig_crd
from tests.kube.test_chart_render import (
    CHART,
    CUSTOM_VALUES,
    find,
    helm,
    pod_spec,
    render,
    secret_data,
)
from tests.support.envtest import KubeTestEnv

NS = "lp-chart"  # the release namespace of these tests
MANAGER = "livepolicy-chart-test"
CONTROLLER_SA = "lp-livepolicy-controller"
AGENT_SA = "lp-livepolicy-agent"

SECRETS = Resource("Secret", "v1", "secrets")
SERVICE_ACCOUNTS = Resource("ServiceAccount", "v1", "serviceaccounts")
CORE_EVENTS = Resource("Event", "v1", "events")
SERVICE_MONITORS = Resource("ServiceMonitor", "monitoring.coreos.com/v1", "servicemonitors")
KINDS: dict[str, Resource] = {r.kind: r for r in (
    SERVICE_ACCOUNTS, SECRETS, CONFIGMAPS, SERVICE_MONITORS, DAEMONSETS, DEPLOYMENTS, PDBS,
    Resource("Service", "v1", "services"),
    Resource("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles", namespaced=False),
    Resource("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", "clusterrolebindings",
             namespaced=False),
    Resource("Role", "rbac.authorization.k8s.io/v1", "roles"),
    Resource("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings"),
    Resource("ValidatingAdmissionPolicy", "admissionregistration.k8s.io/v1",
             "validatingadmissionpolicies", namespaced=False),
    Resource("ValidatingAdmissionPolicyBinding", "admissionregistration.k8s.io/v1",
             "validatingadmissionpolicybindings", namespaced=False),
)}
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
# The Prometheus Operator's CRD, reduced to what the API server needs to accept objects.
SERVICE_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"plural": "servicemonitors", "singular": "servicemonitor",
                       "kind": "ServiceMonitor", "listKind": "ServiceMonitorList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": True}}}]},
}


# -- helpers ------------------------------------------------------------------------------
def apply(kube: KubeClient, obj: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    """Server-side apply of one rendered object (force: this manager owns what it sets)."""
    res = KINDS[obj["kind"]]
    meta = obj["metadata"]
    return kube.patch(res, meta["name"], obj, meta.get("namespace"), patch_type="apply",
                      dry_run=dry_run, field_manager=MANAGER)


def delete_quietly(kube: KubeClient, res: Resource, name: str, ns: str | None) -> None:
    """Delete if present; pods at once (no kubelet here confirms a graceful deletion)."""
    try:
        kube.delete(res, name, ns, grace_period=0 if res is PODS else None)
    except KubeError as exc:
        if not exc.not_found:
            raise


def make_namespace(kube: KubeClient, name: str, labels: dict[str, str] | None = None) -> None:
    body = {"metadata": {"name": name, "labels": labels or {}}}
    kube.patch(NAMESPACES, name, {"apiVersion": "v1", "kind": "Namespace", **body},
               patch_type="apply", field_manager=MANAGER)


def drop_namespace(kube: KubeClient, name: str) -> None:
    """Delete a namespace and finalize it (no namespace controller runs here)."""
    delete_quietly(kube, NAMESPACES, name, None)
    ns = kube.get_optional(NAMESPACES, name)
    if ns is not None:
        ns["spec"] = {"finalizers": []}
        kube.request("PUT", f"/api/v1/namespaces/{name}/finalize", body=ns)


def delete_rendered(kube: KubeClient, objs: list[dict[str, Any]]) -> None:
    for o in reversed(objs):
        delete_quietly(kube, KINDS[o["kind"]], o["metadata"]["name"],
                       o["metadata"].get("namespace"))


def can(env: KubeTestEnv, token: str, verb: str, resource: str, *, group: str = "",
        namespace: str = "", name: str = "", subresource: str = "") -> bool:
    """SelfSubjectAccessReview as the token's identity."""
    attrs = {"verb": verb, "resource": resource, "group": group, "namespace": namespace,
             "name": name, "subresource": subresource}
    status, body = env.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                               {"apiVersion": "authorization.k8s.io/v1",
                                "kind": "SelfSubjectAccessReview",
                                "spec": {"resourceAttributes": attrs}}, token=token)
    assert status == 201, body
    return bool(body["status"]["allowed"])


def forbidden(call: Callable[[], object], who: str) -> None:
    with pytest.raises(KubeError) as err:
        call()
    assert err.value.status == 403, err.value
    assert f"system:serviceaccount:{NS}:{who}" in err.value.message


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def release_ns(kube: KubeClient) -> Iterator[str]:
    make_namespace(kube, NS)
    yield NS
    drop_namespace(kube, NS)


# -- server-side dry-run ------------------------------------------------------------------
@pytest.fixture(scope="module")
def service_monitor_crd(kube: KubeClient) -> Iterator[None]:
    """The ServiceMonitor CRD, as the Prometheus Operator installs it (not the chart's)."""
    try:
        kube.create(CRDS, SERVICE_MONITOR_CRD)
    except KubeError as exc:
        assert exc.status == 409, exc
    for _ in range(100):
        try:
            kube.list(SERVICE_MONITORS, namespace=NS)
            break
        except KubeError:
            time.sleep(0.1)
    yield
    delete_quietly(kube, CRDS, SERVICE_MONITOR_CRD["metadata"]["name"], None)


@pytest.mark.parametrize("variant", ["default", "custom"])
def test_every_rendered_object_passes_server_side_dry_run(
        kube: KubeClient, release_ns: str, service_monitor_crd: None, tmp_path: Path,
        variant: str) -> None:
    objs = render(tmp_path, CUSTOM_VALUES if variant == "custom" else None, namespace=NS)
    assert len(objs) >= 13  # the custom criu agent has no role
    for obj in objs:
        out = apply(kube, obj, dry_run=True)
        assert (out["kind"], out["metadata"]["name"]) == (obj["kind"], obj["metadata"]["name"])
        managers = {m["manager"] for m in out["metadata"].get("managedFields") or []}
        assert MANAGER in managers, obj["kind"]
    # The server defaulted what it stores: the objects went through its real validation.
    ds = next(o for o in objs if o["kind"] == "DaemonSet")
    out = apply(kube, ds, dry_run=True)
    assert pod_spec(out)["restartPolicy"] == "Always"
    # Nothing was stored.
    for obj in objs:
        meta = obj["metadata"]
        assert kube.get_optional(KINDS[obj["kind"]], meta["name"], meta.get("namespace")) is None


def test_an_invalid_object_is_refused_by_the_dry_run(kube: KubeClient, release_ns: str,
                                                     tmp_path: Path) -> None:
    """The dry-run is a real check: the privileged DaemonSet with
    allowPrivilegeEscalation=false is rejected, as on a real cluster."""
    ds = find(render(tmp_path, {"agent": {"privileged": True}}, namespace=NS), "DaemonSet")
    pod_spec(ds)["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = False
    with pytest.raises(KubeError) as err:
        apply(kube, ds, dry_run=True)
    assert err.value.status == 422
    assert "allowPrivilegeEscalation" in err.value.message


def test_pod_security_admission_judges_the_pod_templates(kube: KubeClient,
                                                         kube_env: KubeTestEnv,
                                                         tmp_path: Path) -> None:
    """The real Pod Security admission: the controller's pods pass `restricted`; the
    agent's need `privileged`, and `baseline` names exactly why: the kubelet agent only
    for the node's network and its host paths (no capability), the criu agent also for
    the host PID namespace, its capabilities and the unconfined seccomp/AppArmor."""
    objs = render(tmp_path, namespace=NS)
    criu = find(render(tmp_path, {"agent": {"runtime": "criu"}}, namespace=NS), "DaemonSet")
    sim = find(render(tmp_path, {"agent": {"runtime": "sim", "hostNetwork": False}},
                      namespace=NS), "DaemonSet")
    levels = {"restricted": "lp-chart-restricted", "baseline": "lp-chart-baseline",
              "privileged": "lp-chart-privileged"}

    def admit(workload: dict[str, Any], level: str) -> tuple[int, str]:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"pss-{workload['kind'].lower()}"},
               "spec": pod_spec(workload)}
        status, body = kube_env.request("POST", f"{PODS.path(levels[level])}?dryRun=All",
                                        pod)  # the server's whole message
        return status, body.get("message", "") if isinstance(body, dict) else str(body)

    try:
        for level, ns in levels.items():
            make_namespace(kube, ns, {"pod-security.kubernetes.io/enforce": level})
        assert admit(find(objs, "Deployment"), "restricted")[0] == 201
        assert admit(sim, "restricted")[0] == 201
        kubelet = find(objs, "DaemonSet")
        for agent in (kubelet, criu):
            assert admit(agent, "privileged")[0] == 201
            for level in ("baseline", "restricted"):
                status, message = admit(agent, level)
                assert status == 403 and f'violates PodSecurity "{level}:latest"' in message
        status, message = admit(kubelet, "baseline")
        assert message.split(": ", 2)[2] == (
            'host namespaces (hostNetwork=true), hostPath volumes (volumes "state", '
            '"containerd-socket", "kubelet-checkpoints", "containerd-config"), hostPort '
            '(container "agent" uses hostPort 7474)'), message
        status, message = admit(criu, "baseline")
        for what in ("host namespaces (hostNetwork=true, hostPID=true)",
                     'hostPath volumes (volumes "state", "containerd-socket", '
                     '"kubelet-checkpoints")', 'seccompProfile.type to "Unconfined"',
                     'AppArmor profile type to "Unconfined"',
                     # Of the CRIU list, these six are beyond the runtime's default set.
                     'must not include "CHECKPOINT_RESTORE", "DAC_READ_SEARCH", "NET_ADMIN", '
                     '"SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE" in'):
            assert what in message, (what, message)
    finally:
        for ns in levels.values():
            drop_namespace(kube, ns)


# -- helm install / upgrade / uninstall keep the generated secrets -------------------------
def test_helm_install_upgrade_keep_the_generated_token_and_certificate(
        kube: KubeClient, kube_env: KubeTestEnv, tmp_path: Path) -> None:
    ns, rel = "lp-chart-helm", "lph"
    kc = ["--kubeconfig", str(kube_env.kubeconfig_path), "--namespace", ns]
    # the generated token and the shared certificate are kept
    shared = ["--set", "agent.auth.mode=sharedToken", "--set", "agent.tls.identity=shared"]
    token_name, tls_name = "lph-livepolicy-agent-token", "lph-livepolicy-agent-tls"

    def secrets() -> tuple[bytes, bytes]:
        token = kube.get(SECRETS, token_name, ns)
        return secret_data(token, "token"), secret_data(kube.get(SECRETS, tls_name, ns),
                                                        "tls.crt")

    def checksum() -> str:
        ds = kube.get(DAEMONSETS, "lph-livepolicy-agent", ns)
        return str(ds["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"])

    try:
        notes = helm("install", rel, str(CHART), "--create-namespace", *kc, *shared).stdout
        assert f"kubectl -n {ns} get secret {token_name} -o jsonpath='{{.data.token}}'" in notes
        assert "WARNING" not in notes and "lease/livepolicy-controller" in notes
        token, cert = secrets()
        assert len(token) == 48
        first = checksum()
        helm("upgrade", rel, str(CHART), *kc, *shared, "--set", "controller.replicas=3")
        assert secrets() == (token, cert)
        assert checksum() == first  # the agents are not restarted for nothing
        assert kube.get(DEPLOYMENTS, "lph-livepolicy-controller", ns)["spec"]["replicas"] == 3
        # New names for the certificate: a new certificate, the same token.
        helm("upgrade", rel, str(CHART), *kc, "--reuse-values",
             "--set", "agent.tls.dnsNames={*.eu-west-1.compute.internal}")
        token2, cert2 = secrets()
        assert token2 == token and cert2 != cert
        assert checksum() != first  # ... but are for a new certificate
        # `helm template --dry-run=server` sees the installed Secret too (lookup).
        out = helm("template", rel, str(CHART), *kc, *shared, "--dry-run=server")
        assert token.decode() not in out.stdout  # base64 only
        assert base64.b64encode(token).decode() in out.stdout
    finally:
        helm("uninstall", rel, *kc, check=False)
        drop_namespace(kube, ns)
    for kind, name in (("ClusterRole", "lph-livepolicy-controller"),
                       ("ClusterRoleBinding", "lph-livepolicy-agent"),
                       ("Role", "lph-livepolicy-controller-cluster-info")):
        ns_of = "kube-system" if kind == "Role" else None
        assert kube.get_optional(KINDS[kind], name, ns_of) is None, (kind, name)


# -- RBAC, for real -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed_rbac(kube: KubeClient, release_ns: str, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[list[dict[str, Any]]]:
    """The chart's ServiceAccounts, RBAC and policies ConfigMap, applied for real."""
    objs = [o for o in render(tmp_path_factory.mktemp("rbac"), namespace=NS)
            if o["kind"] in (*RBAC_KINDS, "ConfigMap")]
    for obj in objs:
        apply(kube, obj, dry_run=False)
    yield objs
    delete_rendered(kube, objs)


@pytest.fixture(scope="module")
def controller_token(kube_env: KubeTestEnv, installed_rbac: list[dict[str, Any]]) -> str:
    return kube_env.service_account_token(NS, CONTROLLER_SA)  # TokenRequest


@pytest.fixture(scope="module")
def workload(kube: KubeClient, release_ns: str) -> Iterator[dict[str, str]]:
    """A node and a pod for the real calls (admin-created; nothing schedules here)."""
    node = {"metadata": {"name": "lp-chart-node"}}
    pod = {"metadata": {"name": "web-0", "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": "nginx"}]}}
    kube.create(NODES, node)
    kube.create(PODS, pod, NS)
    yield {"node": "lp-chart-node", "pod": "web-0"}
    delete_quietly(kube, PODS, "web-0", NS)
    delete_quietly(kube, NODES, "lp-chart-node", None)


CLUSTER_READS = [("", r) for r in ("nodes", "pods", "persistentvolumeclaims",
                                   "persistentvolumes")] + [
    ("policy", "poddisruptionbudgets"), ("apps", "replicasets"), ("apps", "deployments"),
    ("apps", "statefulsets"), ("apps", "daemonsets"), ("batch", "jobs"), ("batch", "cronjobs"),
    ("crd.k8s.amazonaws.com", "eniconfigs")]


def test_controller_access_reviews(kube_env: KubeTestEnv, controller_token: str) -> None:
    t = controller_token
    for group, resource in CLUSTER_READS:
        for verb in ("get", "list", "watch"):
            assert can(kube_env, t, verb, resource, group=group), (verb, group, resource)
            assert can(kube_env, t, verb, resource, group=group, namespace="shop"), resource
    assert can(kube_env, t, "patch", "pods", namespace="shop")
    for group in ("", "events.k8s.io"):
        for verb in ("create", "patch"):
            assert can(kube_env, t, verb, "events", group=group, namespace="shop")
    for verb in ("get", "list", "watch"):
        assert can(kube_env, t, verb, "configmaps", namespace=NS)
    for verb in ("get", "create", "update"):
        assert can(kube_env, t, verb, "leases", group="coordination.k8s.io", namespace=NS)
    assert can(kube_env, t, "get", "configmaps", namespace="kube-system",
               name="livepolicy-cluster-info")

    denied = [
        ("delete", "pods", "", "shop", ""), ("create", "pods", "", "shop", ""),
        ("update", "pods", "", "shop", ""), ("deletecollection", "pods", "", "shop", ""),
        ("create", "pods", "", "shop", "eviction"), ("create", "pods", "", "shop", "exec"),
        ("patch", "pods", "", "shop", "status"),
        ("get", "secrets", "", NS, ""), ("list", "secrets", "", "kube-system", ""),
        ("patch", "nodes", "", "", ""), ("update", "nodes", "", "", ""),
        ("delete", "nodes", "", "", ""),
        ("patch", "deployments", "apps", "shop", ""), ("delete", "deployments", "apps", "shop", ""),
        ("create", "leases", "coordination.k8s.io", "kube-system", ""),
        ("update", "leases", "coordination.k8s.io", "default", ""),
        ("delete", "leases", "coordination.k8s.io", NS, ""),
        ("update", "configmaps", "", NS, ""), ("create", "configmaps", "", NS, ""),
        ("delete", "configmaps", "", NS, ""), ("list", "configmaps", "", "default", ""),
        ("list", "configmaps", "", "kube-system", ""),
        ("create", "serviceaccounts", "", NS, "token"),
        ("create", "namespaces", "", "", ""), ("delete", "events", "", "shop", ""),
        ("create", "clusterrolebindings", "rbac.authorization.k8s.io", "", ""),
        ("create", "nodes", "", "", "checkpoint"), ("get", "nodes", "", "", "proxy"),
    ]
    for verb, resource, group, ns, sub in denied:
        assert not can(kube_env, t, verb, resource, group=group, namespace=ns,
                       subresource=sub), (verb, resource, group, ns, sub)
    assert not can(kube_env, t, "get", "configmaps", namespace="kube-system",
                   name="extension-apiserver-authentication")


def test_controller_real_calls(kube: KubeClient, kube_env: KubeTestEnv, controller_token: str,
                               workload: dict[str, str], tmp_path: Path) -> None:
    ensure_eniconfig_crd(kube)
    kc = kube_env.token_kubeconfig(controller_token, tmp_path / "controller-kubeconfig")
    with KubeClient.from_config(str(kc)) as sa:
        # Every read of the facts, across namespaces.
        for res in (NODES, PODS, PVCS, PVS, PDBS, REPLICASETS, DEPLOYMENTS, STATEFULSETS,
                    DAEMONSETS, JOBS, CRONJOBS, ENICONFIGS):
            sa.list(res)
        assert any(p["metadata"]["name"] == workload["pod"] for p in sa.list(PODS).items)
        raw = sa.request_raw("GET", PODS.path(NS), query=[("watch", "true"),
                                                          ("timeoutSeconds", 1)])
        first = orjson.loads(raw.splitlines()[0])
        assert first["type"] == "ADDED" and first["object"]["kind"] == "Pod"
        # The label, as `livepolicy label` and the controller write it.
        out = sa.patch(PODS, workload["pod"], {"metadata": {"labels": {
            "live.cast.ai/migration-enabled": "true"}}}, NS)
        assert out["metadata"]["labels"]["live.cast.ai/migration-enabled"] == "true"
        # Events, both APIs; and a patch (an event counted again).
        core = sa.create(CORE_EVENTS, {
            "metadata": {"generateName": "web-0-"}, "type": "Normal", "reason": "Assessed",
            "message": "eligible", "involvedObject": {"kind": "Pod", "namespace": NS,
                                                      "name": workload["pod"]},
            "source": {"component": "livepolicy"}}, NS)
        sa.patch(CORE_EVENTS, core["metadata"]["name"], {"count": 2}, NS)
        sa.create(EVENTS, {
            "metadata": {"generateName": "web-0-"}, "type": "Normal", "reason": "Assessed",
            "action": "Label", "note": "eligible", "eventTime": now_micro(),
            "reportingController": "livepolicy.io/controller",
            "reportingInstance": "livepolicy-controller-0",
            "regarding": {"kind": "Pod", "namespace": NS, "name": workload["pod"]}}, NS)
        # The leader-election Lease in the release namespace.
        lease = sa.create(LEASES, {"metadata": {"name": "livepolicy-controller"}, "spec": {
            "holderIdentity": "a", "leaseDurationSeconds": 15}}, NS)
        lease["spec"]["holderIdentity"] = "b"
        assert sa.replace(LEASES, lease, NS)["spec"]["holderIdentity"] == "b"
        assert sa.get(LEASES, "livepolicy-controller", NS)
        # The policies ConfigMap, and the optional ClusterInfo ConfigMap.
        assert sa.get(CONFIGMAPS, "lp-livepolicy-policies", NS)["data"]
        sa.list(CONFIGMAPS, namespace=NS)
        sa.request_raw("GET", CONFIGMAPS.path(NS), query=[("watch", "true"),
                                                          ("timeoutSeconds", 1)])
        sa.get_optional(CONFIGMAPS, "livepolicy-cluster-info", "kube-system")

        who = CONTROLLER_SA
        pod = workload["pod"]
        forbidden(lambda: sa.delete(PODS, pod, NS), who)
        forbidden(lambda: sa.create(PODS, {"metadata": {"name": "x"}, "spec": {
            "containers": [{"name": "x", "image": "x"}]}}, NS), who)
        forbidden(lambda: sa.list(SECRETS, namespace=NS), who)
        forbidden(lambda: sa.get(SECRETS, "anything", "kube-system"), who)
        forbidden(lambda: sa.patch(NODES, workload["node"], {"spec": {"unschedulable": True}}),
                  who)
        forbidden(lambda: sa.create(LEASES, {"metadata": {"name": "livepolicy-controller"},
                                             "spec": {}}, "kube-system"), who)
        forbidden(lambda: sa.delete(LEASES, "livepolicy-controller", NS), who)
        forbidden(lambda: sa.patch(CONFIGMAPS, "lp-livepolicy-policies", {"data": {}}, NS),
                  who)
        forbidden(lambda: sa.list(CONFIGMAPS, namespace="default"), who)
        forbidden(lambda: sa.get(CONFIGMAPS, "extension-apiserver-authentication",
                                 "kube-system"), who)
        forbidden(lambda: sa.create(PODS, {"apiVersion": "policy/v1", "kind": "Eviction",
                                           "metadata": {"name": pod}}, NS), who)
        forbidden(lambda: sa.request("POST", PODS.path(NS, pod) + "/eviction", body={
            "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}}), who)
        forbidden(lambda: sa.request("POST", SERVICE_ACCOUNTS.path(NS, CONTROLLER_SA) +
                                     "/token", body={"spec": {}}), who)
    lease_left = kube.get_optional(LEASES, "livepolicy-controller", NS)
    if lease_left is not None:
        kube.delete(LEASES, "livepolicy-controller", NS)


def test_kubelet_agent_service_account(kube: KubeClient, kube_env: KubeTestEnv,
                                       installed_rbac: list[dict[str, Any]],
                                       workload: dict[str, str], tmp_path: Path) -> None:
    """What the kubelet runtime does with its token: checkpoint through the kubelet
    (`create` on nodes/checkpoint), read the source pod, create the copy, delete the
    source, hand labels over; nothing else."""
    token = kube_env.service_account_token(NS, AGENT_SA)
    assert can(kube_env, token, "create", "nodes", name=workload["node"],
               subresource="checkpoint")
    for verb in ("get", "list", "create", "delete", "patch"):
        assert can(kube_env, token, verb, "pods", namespace="shop"), verb
    for verb, resource, ns, sub in (
            ("get", "secrets", NS, ""), ("list", "secrets", "", ""), ("get", "nodes", "", ""),
            ("patch", "nodes", "", ""), ("get", "nodes", "", "proxy"),
            ("update", "pods", "shop", ""), ("watch", "pods", "", ""),
            ("create", "pods", "shop", "exec"), ("create", "pods", "shop", "eviction"),
            ("patch", "pods", "shop", "status"), ("create", "events", "shop", ""),
            ("get", "configmaps", NS, ""), ("create", "serviceaccounts", NS, "token"),
            ("update", "leases", NS, "")):
        group = "coordination.k8s.io" if resource == "leases" else ""
        assert not can(kube_env, token, verb, resource, group=group, namespace=ns,
                       subresource=sub), (verb, resource, sub)
    kc = kube_env.token_kubeconfig(token, tmp_path / "agent-kubeconfig")
    pod = workload["pod"]
    with KubeClient.from_config(str(kc)) as sa:
        on_node = sa.list(PODS, field_selector="spec.nodeName=lp-chart-node").items
        assert on_node == []  # nothing is scheduled in the test apiserver
        source = sa.get(PODS, pod, NS)
        copy = sa.create(PODS, {"metadata": {"name": f"{pod}-0a1b2c3d", "labels": {
            "livepolicy.io/restored-from-uid": source["metadata"]["uid"]}},
            "spec": {"nodeName": workload["node"], "containers": [
                {"name": "web", "image": "localhost/livepolicy/checkpoint-web:1",
                 "imagePullPolicy": "Never"}]}}, NS)
        sa.patch(PODS, copy["metadata"]["name"], {"metadata": {"labels": {"app": "web"}}}, NS)
        sa.delete(PODS, copy["metadata"]["name"], NS, grace_period=0)
        forbidden(lambda: sa.get(SECRETS, "lp-livepolicy-agent-token", NS), AGENT_SA)
        forbidden(lambda: sa.patch(NODES, workload["node"], {"spec": {"unschedulable": True}}),
                  AGENT_SA)
        forbidden(lambda: sa.create(CORE_EVENTS, {
            "metadata": {"generateName": "web-0-"}, "reason": "x", "message": "x",
            "involvedObject": {"kind": "Pod", "namespace": NS, "name": pod}}, NS), AGENT_SA)


def pod_bound_token(env: KubeTestEnv, pod: dict[str, Any]) -> str:
    """The token the kubelet would mount in `pod`: bound to it, so naming its node."""
    meta = pod["metadata"]
    status, body = env.request(
        "POST", f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/"
        f"{pod['spec']['serviceAccountName']}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            "expirationSeconds": 3600, "boundObjectRef": {
                "kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]}}})
    assert status == 201, body
    return str(body["status"]["token"])


def test_agent_pod_writes_are_confined_to_its_own_node(
        kube: KubeClient, kube_env: KubeTestEnv, installed_rbac: list[dict[str, Any]],
        tmp_path: Path) -> None:
    """The chart's ValidatingAdmissionPolicy, enforced by the real API server: with the
    token of its pod on node A, the agent creates restored copies on A only, deletes and
    changes pods of A only, and may hand labels over to a copy elsewhere (the commit)."""
    policy = [o for o in render(tmp_path, namespace=NS)
              if o["kind"].startswith("ValidatingAdmissionPolicy")
              and o["metadata"]["name"].endswith("-own-node")]
    assert len(policy) == 2
    a, b = "lp-chart-a", "lp-chart-b"

    def pod(name: str, node: str, labels: dict[str, str] | None = None,
            sa: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"nodeName": node,
                                "containers": [{"name": "c", "image": "nginx"}]}
        if sa:
            spec["serviceAccountName"] = sa
        return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}

    copy_label = {"livepolicy.io/restored-from-uid": "0f0e0f0e-0000-4000-8000-00000000000e"}

    def restored(source: dict[str, Any], node: str, mid: str = "m-1") -> dict[str, Any]:
        """The kubelet runtime's own restored copy of `source` (kubelet_pods.restored_pod)."""
        name = source["metadata"]["name"]
        images = {c["name"]: image_ref(NS, name, c["name"], mid)
                  for c in source["spec"]["containers"]}
        return restored_pod(source, name=restored_name(name, mid), node=node, images=images,
                            mid=mid, state_sha256="ab" * 32)
    made: list[str] = []
    try:
        for node in (a, b):
            kube.create(NODES, {"metadata": {"name": node}})
        agent_pod = kube.create(PODS, pod("agent-a", a, sa=AGENT_SA), NS)
        sources: dict[str, dict[str, Any]] = {}
        for name, node, labels in (("web-a", a, {"app": "web"}), ("web-b", b, {})):
            sources[name] = kube.create(PODS, pod(name, node, labels), NS)
        copy_b = pod("copy-b", b, copy_label)
        copy_b["metadata"]["annotations"] = {"livepolicy.io/parked-labels": '{"app": "web"}'}
        kube.create(PODS, copy_b, NS)
        made += ["agent-a", "web-a", "web-b", "copy-b"]
        for obj in policy:
            apply(kube, obj, dry_run=False)
        kc = kube_env.token_kubeconfig(pod_bound_token(kube_env, agent_pod),
                                       tmp_path / "agent-a")
        unbound = kube_env.token_kubeconfig(kube_env.service_account_token(NS, AGENT_SA),
                                            tmp_path / "agent-unbound")
        with KubeClient.from_config(str(kc)) as sa, \
                KubeClient.from_config(str(unbound)) as loose:

            def refused(call: Callable[[], object], why: str) -> None:
                with pytest.raises(KubeError) as err:
                    call()
                assert err.value.status in (403, 422), err.value
                assert why in err.value.message, err.value.message

            # The policy is enforced once the API server has loaded it.
            wait_until = time.monotonic() + 30
            for attempt in range(1000):
                try:
                    sa.create(PODS, restored(sources["web-a"], b, f"probe-{attempt}"), NS,
                              dry_run=True)
                except KubeError as exc:
                    assert "own node" in exc.message, exc.message
                    break
                assert time.monotonic() < wait_until, "the policy was never enforced"
                time.sleep(0.2)

            copy_a = sa.create(PODS, restored(sources["web-a"], a), NS)
            copy_a_name = copy_a["metadata"]["name"]
            made.append(copy_a_name)
            sa.patch(PODS, copy_a_name, {"metadata": {"labels": {"app": "web"}}}, NS)
            sa.patch(PODS, "copy-b", handover_patch(kube.get(PODS, "copy-b", NS)), NS)  # commit
            sa.delete(PODS, "web-a", NS, grace_period=0)
            made.remove("web-a")
            refused(lambda: sa.create(PODS, restored(sources["web-b"], b), NS),
                    "creates only restored copies")
            refused(lambda: sa.create(PODS, pod("x-a", a), NS), "creates only restored copies")
            refused(lambda: sa.delete(PODS, "web-b", NS), "deletes only pods of its own node")
            refused(lambda: sa.delete(PODS, "copy-b", NS), "deletes only pods of its own node")
            refused(lambda: sa.patch(PODS, "web-b", {"metadata": {"labels": {"x": "y"}}}, NS),
                    "changes only pods of its own node")
            refused(lambda: sa.patch(PODS, "copy-b", {"spec": {"activeDeadlineSeconds": 5}},
                                     NS), "changes only pods of its own node")
            refused(lambda: loose.create(PODS, restored(sources["web-a"], a, "m-2"), NS),
                    "token names no node")
            assert sa.get(PODS, "web-b", NS)  # reads are RBAC's: the source is on A or B
    finally:
        for obj in policy:
            delete_quietly(kube, KINDS[obj["kind"]], obj["metadata"]["name"], None)
        for name in made:
            delete_quietly(kube, PODS, name, NS)
        for node in (a, b):
            delete_quietly(kube, NODES, node, None)


def test_rendered_rbac_is_what_was_applied(kube: KubeClient,
                                           installed_rbac: list[dict[str, Any]]) -> None:
    """What the server stored is what the chart rendered (no rule dropped or widened)."""
    for obj in installed_rbac:
        meta = obj["metadata"]
        stored = kube.get(KINDS[obj["kind"]], meta["name"], meta.get("namespace"))
        for key in ("rules", "roleRef", "subjects"):
            if key in obj:
                assert stored[key] == obj[key], (obj["kind"], meta["name"], key)


def test_helm_install_with_cert_manager_needs_its_api(kube_env: KubeTestEnv) -> None:
    """On a cluster without cert-manager, the install says so before creating anything."""
    out = helm("install", "lpcm", str(CHART), "--namespace", "lp-chart-cm",
               "--kubeconfig", str(kube_env.kubeconfig_path), "--dry-run=server",
               "--set", "agent.tls.certManager.enabled=true", check=False)
    assert out.returncode == 1
    assert "this cluster serves no cert-manager.io/v1 API" in out.stderr, out.stderr


# -- cert-manager objects -----------------------------------------------------------------
def _crd(kind: str, plural: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.cert-manager.io"},
            "spec": {"group": "cert-manager.io", "scope": "Namespaced",
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind,
                               "listKind": f"{kind}List"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                         "openAPIV3Schema": {"type": "object", "properties": {
                             "spec": {"type": "object", "properties": spec}}}}}]}}


_STR = {"type": "string"}
_REF = {"type": "object", "required": ["name"], "properties": {
    "name": _STR, "kind": _STR, "group": _STR}}
# cert-manager's release CRDs are not available offline here: these are reduced to the
# fields the chart sets, typed as cert-manager.io/v1 documents them
# (cert-manager.io/docs/reference/api-docs: IssuerSpec, CertificateSpec, KeyUsage,
# CertificatePrivateKey). Unknown or mistyped fields are refused (fieldValidation=Strict).
CERT_MANAGER_CRDS = [
    _crd("Issuer", "issuers", {
        "selfSigned": {"type": "object", "properties": {"crlDistributionPoints": {
            "type": "array", "items": _STR}}},
        "ca": {"type": "object", "required": ["secretName"], "properties": {
            "secretName": _STR}}}),
    _crd("Certificate", "certificates", {
        "secretName": _STR, "commonName": _STR, "isCA": {"type": "boolean"},
        "dnsNames": {"type": "array", "items": _STR},
        "ipAddresses": {"type": "array", "items": _STR},
        "duration": _STR, "renewBefore": _STR,
        "usages": {"type": "array", "items": {"type": "string", "enum": [
            "signing", "digital signature", "content commitment", "key encipherment",
            "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
            "decipher only", "any", "server auth", "client auth", "code signing",
            "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
            "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}},
        "privateKey": {"type": "object", "properties": {
            "algorithm": {"type": "string", "enum": ["RSA", "ECDSA", "Ed25519"]},
            "size": {"type": "integer"}, "encoding": {"type": "string"},
            "rotationPolicy": {"type": "string", "enum": ["Never", "Always"]}}},
        "issuerRef": _REF}),
]


def test_cert_manager_objects_pass_strict_dry_run(kube: KubeClient, kube_env: KubeTestEnv,
                                                  release_ns: str, tmp_path: Path) -> None:
    for crd in CERT_MANAGER_CRDS:
        try:
            kube.create(CRDS, crd)
        except KubeError as exc:
            assert exc.status == 409, exc
    try:
        plurals = {"Issuer": "issuers", "Certificate": "certificates"}
        objs = [o for o in render(tmp_path, {"agent": {"tls": {"certManager": {
            "enabled": True, "renewBefore": "720h"}}}}, namespace=NS, generate=False)
            if o["kind"] in plurals]
        assert sorted(o["kind"] for o in objs) == ["Certificate", "Certificate", "Issuer",
                                                   "Issuer"]
        for obj in objs:
            path = f"/apis/cert-manager.io/v1/namespaces/{NS}/{plurals[obj['kind']]}"
            deadline = time.monotonic() + 30
            while True:
                status, body = kube_env.request(
                    "POST", f"{path}?dryRun=All&fieldValidation=Strict", obj)
                if status != 404 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)  # the CRD is being established
            assert status == 201, (obj["metadata"]["name"], body)
        cert = next(o for o in objs if o["kind"] == "Certificate")
        bad = {**cert, "spec": {**cert["spec"], "dnsName": ["typo"]}}
        status, body = kube_env.request(
            "POST", f"/apis/cert-manager.io/v1/namespaces/{NS}/certificates"
            "?dryRun=All&fieldValidation=Strict", bad)
        assert status == 400 and 'unknown field "spec.dnsName"' in str(body), body
    finally:
        for crd in CERT_MANAGER_CRDS:
            delete_quietly(kube, CRDS, crd["metadata"]["name"], None)

