"""Least privilege, proven on the real API server: the RBAC manifests of
docs/kubernetes.md let a ServiceAccount run `snapshot`, `plan` and `label` (and hold the
Lease lock), and nothing more. Also: the in-cluster configuration (service-account token
file, no kubeconfig)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from kubernetes.config import incluster_config
from ruamel.yaml import YAML

from bench.synth import generate
from livepolicy.cli.main import cli
from livepolicy.facts.kube import KubeSource
from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.lease import LeaseLock
from livepolicy.kube.resources import NODES, PODS, Resource
from tests.conftest import ROOT
from tests.kube.seed import put_cluster_info, seed
from tests.support.envtest import KubeTestEnv

pytestmark = pytest.mark.kube

SECRETS = Resource("Secret", "v1", "secrets")
RBAC_KINDS = {
    "ClusterRole": Resource("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles",
                            namespaced=False),
    "Role": Resource("Role", "rbac.authorization.k8s.io/v1", "roles"),
    "ClusterRoleBinding": Resource("ClusterRoleBinding", "rbac.authorization.k8s.io/v1",
                                   "clusterrolebindings", namespaced=False),
    "RoleBinding": Resource("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings"),
}


def documented_rbac() -> list[dict[str, Any]]:
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    block = re.search(r"<!-- rbac:start -->\s*```yaml\n(.*?)```\s*<!-- rbac:end -->", text,
                      re.S)
    assert block, "docs/kubernetes.md lost its RBAC block"
    return [d for d in YAML(typ="safe", pure=True).load_all(block.group(1)) if d]


@pytest.fixture()
def sa_kubeconfig(empty_cluster: KubeClient, kube_env: KubeTestEnv, tmp_path: Path
                  ) -> Iterator[Path]:
    token = kube_env.service_account_token("livepolicy", "livepolicy")
    for doc in documented_rbac():
        res = RBAC_KINDS[doc["kind"]]
        ns = doc["metadata"].get("namespace")
        try:
            empty_cluster.create(res, doc, ns)
        except KubeError as exc:
            assert exc.status == 409, exc
            empty_cluster.replace(res, doc, ns)
    snap = generate(6, 5, seed=11)
    seed(empty_cluster, snap["items"])
    info = next(o for o in snap["items"] if o["kind"] == "ClusterInfo")
    put_cluster_info(empty_cluster, info, name=info["metadata"]["name"])
    yield kube_env.token_kubeconfig(token, tmp_path / "sa-kubeconfig")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_least_privilege_role_runs_snapshot_plan_and_label(sa_kubeconfig: Path,
                                                           tmp_path: Path) -> None:
    kc = str(sa_kubeconfig)
    out = tmp_path / "cluster.json"
    r = run("snapshot", "--cluster", "kube", "--kubeconfig", kc, "--format", "json",
            "-o", str(out))
    assert r.exit_code == 0, r.output
    assert len([o for o in json.loads(out.read_text())["items"] if o["kind"] == "Pod"]) == 30
    r = run("plan", "--cluster", "kube", "--kubeconfig", kc, "--policies", "bench/policies",
            "--json")
    assert r.exit_code == 0, r.output
    r = run("label", "--cluster", "kube", "--kubeconfig", kc, "--policies", "bench/policies",
            "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["changes"] and {c["result"] for c in doc["changes"]} == {"applied"}

    with KubeClient.from_config(kc) as sa:
        with LeaseLock(sa, "livepolicy-rbac"):
            pass
        pod = sa.list(PODS).items[0]["metadata"]
        for forbidden in (
            lambda: sa.delete(PODS, pod["name"], pod["namespace"]),
            lambda: sa.patch(NODES, sa.list(NODES).items[0]["metadata"]["name"],
                             {"spec": {"unschedulable": True}}),
            lambda: sa.list(SECRETS, namespace="kube-system"),
            lambda: sa.create(PODS, {"metadata": {"name": "x"}, "spec": {
                "containers": [{"name": "x", "image": "x"}]}}, "default"),
        ):
            with pytest.raises(KubeError) as err:
                forbidden()
            assert err.value.status == 403
            assert "system:serviceaccount:livepolicy:livepolicy" in err.value.message


def test_missing_permission_names_what_to_grant(empty_cluster: KubeClient,
                                                kube_env: KubeTestEnv, tmp_path: Path) -> None:
    token = kube_env.service_account_token("livepolicy", "planner-no-eni")
    role = json.loads(json.dumps(documented_rbac()[0]))
    role["metadata"]["name"] = "planner-no-eni"
    role["rules"] = [r for r in role["rules"] if "eniconfigs" not in r["resources"]]
    for doc in (role, {"apiVersion": "rbac.authorization.k8s.io/v1",
                       "kind": "ClusterRoleBinding", "metadata": {"name": "planner-no-eni"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                   "kind": "ClusterRole", "name": "planner-no-eni"},
                       "subjects": [{"kind": "ServiceAccount", "name": "planner-no-eni",
                                     "namespace": "livepolicy"}]}):
        try:
            empty_cluster.create(RBAC_KINDS[str(doc["kind"])], doc)
        except KubeError as exc:
            assert exc.status == 409
    seed(empty_cluster, [o for o in generate(2, 1, seed=1)["items"]
                         if o["kind"] == "ENIConfig"])  # the CRD exists
    kc = kube_env.token_kubeconfig(token, tmp_path / "kc")
    r = run("plan", "--cluster", "kube", "--kubeconfig", str(kc))
    assert r.exit_code == 1
    assert "eniconfigs.crd.k8s.amazonaws.com is forbidden" in r.output
    assert "grant the missing permission" in r.output


def test_in_cluster_configuration(sa_kubeconfig: Path, kube_env: KubeTestEnv, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No kubeconfig anywhere, a pod's environment and service-account files: in-cluster."""
    token = kube_env.service_account_token("livepolicy", "livepolicy")
    (tmp_path / "token").write_text(token)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(kube_env.ca_path))
    host, _, port = kube_env.server.removeprefix("https://").rpartition(":")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    source = KubeSource()
    facts = source.read()
    assert source.client.target.in_cluster
    assert len(facts.pods) == 30 and len(facts.nodes) == 6
    with pytest.raises(Exception, match="--context needs a kubeconfig"):
        KubeSource(context="x").read()
