"""KubeSource against the real kube-apiserver: same facts as the snapshot it came from,
pagination, 410 restarts, ClusterInfo inference and override, clear errors."""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.synth import generate
from livepolicy.core.diagnostics import DiagnosticError
from livepolicy.facts.kube import KubeSource, cluster_info, infer_platform, infer_region
from livepolicy.facts.model import ClusterFacts
from livepolicy.facts.snapshot import SnapshotSource
from livepolicy.kube.client import Call, KubeClient
from livepolicy.kube.resources import CONFIGMAPS, PODS
from tests.kube.seed import put_cluster_info, remove_eniconfig_crd, seed
from tests.support.envtest import PINNED_KUBE_VERSION, KubeTestEnv

pytestmark = pytest.mark.kube


# Admission (PodTopologyLabels) copies these from the node to pods created bound to it.
_ADMISSION_LABELS = ("topology.kubernetes.io/zone", "topology.kubernetes.io/region")


def _normalised(facts: ClusterFacts) -> dict[str, Any]:
    """Facts minus what the API server assigns itself (creation times, uids, labels)."""
    def labels(p: Any) -> dict[str, str]:
        return {k: v for k, v in p.labels.items() if k not in _ADMISSION_LABELS}

    return {
        "info": dataclasses.replace(facts.info, observed_at=""),
        "nodes": [dataclasses.replace(n, created="") for n in facts.nodes],
        "pods": [dataclasses.replace(p, uid="", labels=labels(p)) for p in facts.pods],
        "pdbs": facts.pdbs, "eniconfigs": facts.eniconfigs,
        "replicas": dict(facts.workload_replicas),
    }


def test_live_read_gives_the_snapshot_facts(empty_cluster: KubeClient, tmp_path: Path) -> None:
    snap = generate(12, 6, seed=3)
    seed(empty_cluster, snap["items"])
    info = next(o for o in snap["items"] if o["kind"] == "ClusterInfo")
    put_cluster_info(empty_cluster, info, name=info["metadata"]["name"])
    path = tmp_path / "synth.json"
    path.write_bytes(orjson.dumps(snap))

    source = KubeSource(client=empty_cluster, page_size=20)
    live = source.read()
    assert live.source == "kube"
    assert _normalised(live) == _normalised(SnapshotSource(path).read())
    assert live.info.observed_at.endswith("Z")
    assert live.eniconfigs == ("us-east-1c",)
    # 72 pods in pages of 20: the pod list took four pages, every other list one.
    assert source.report.counts["Pod"] == 72
    assert source.report.pages["Pod"] == 4
    assert source.report.counts["ENIConfig"] == 1


def test_missing_crd_and_configmap_are_tolerated(empty_cluster: KubeClient) -> None:
    remove_eniconfig_crd(empty_cluster)
    source = KubeSource(client=empty_cluster)
    facts = source.read()
    assert facts.nodes == () and facts.pods == () and facts.eniconfigs == ()
    assert source.report.counts["ENIConfig"] == 0
    info = facts.info
    assert info.kubernetes_version == PINNED_KUBE_VERSION
    assert info.platform == "unknown"  # a plain apiserver, no cloud provider IDs
    assert info.name == "envtest"  # the kubeconfig's cluster name
    assert info.observed_at


def test_eks_inference_from_nodes_and_configmap_override(empty_cluster: KubeClient) -> None:
    node = {"metadata": {"name": "ip-10-0-1-5.ec2.internal",
                         "labels": {"topology.kubernetes.io/zone": "eu-west-1b"}},
            "spec": {"providerID": "aws:///eu-west-1b/i-0abc"}}
    seed(empty_cluster, [{"apiVersion": "v1", "kind": "Node", **node}])
    facts = KubeSource(client=empty_cluster).read()
    assert (facts.info.platform, facts.info.region) == ("eks", "eu-west-1")
    assert facts.info.kubernetes_version == PINNED_KUBE_VERSION

    put_cluster_info(empty_cluster, {"spec": {
        "region": "eu-west-2", "networking": {"prefixDelegation": True, "mode": "custom"},
        "subnets": [{"id": "subnet-1", "zone": "eu-west-2a", "cidr": "10.0.0.0/20",
                     "tags": {"kubernetes.io/role/cni": "1"}}],
        "observedAt": "2000-01-01T00:00:00Z"}}, name="shop-prod")
    info = KubeSource(client=empty_cluster).read().info
    assert (info.name, info.platform, info.region) == ("shop-prod", "eks", "eu-west-2")
    assert info.prefix_delegation and info.network_mode == "custom"
    assert [s.id for s in info.subnets] == ["subnet-1"]
    assert info.subnets[0].tags == {"kubernetes.io/role/cni": "1"}
    assert info.observed_at != "2000-01-01T00:00:00Z"  # always the time of the read


def test_bad_configmap_is_a_located_error(empty_cluster: KubeClient) -> None:
    cm = {"metadata": {"name": "livepolicy-cluster-info"}, "data": {"spec": "region: [x"}}
    empty_cluster.create(CONFIGMAPS, cm, "kube-system")
    with pytest.raises(DiagnosticError) as err:
        KubeSource(client=empty_cluster).read()
    assert "configmap kube-system/livepolicy-cluster-info" in str(err.value)
    assert "not valid YAML" in str(err.value)
    cm["data"] = {"spec": "networking: {prefixDelegation: maybe}"}
    empty_cluster.replace(CONFIGMAPS, cm, "kube-system")
    with pytest.raises(DiagnosticError) as err:
        KubeSource(client=empty_cluster).read()
    assert "ClusterInfo" in str(err.value) and "prefixDelegation must be true or false" \
        in str(err.value)


def test_inference_rules() -> None:
    def node(pid: str = "", **labels: str) -> dict[str, Any]:
        return {"metadata": {"labels": labels}, "spec": {"providerID": pid} if pid else {}}

    assert infer_platform("v1.31.4-eks-2d5f260", []) == "eks"
    assert infer_platform("v1.30.1-gke.100", []) == "gke"
    assert infer_platform("v1.30.1", [node("azure:///subscriptions/x")]) == "aks"
    assert infer_platform("v1.30.1", [node("kind://docker/kind/kind-control-plane")]) == "kind"
    assert infer_platform("v1.30.1", [node()]) == "unknown"
    region = "topology.kubernetes.io/region"
    assert infer_region([node(**{region: "us-west-2"}), node(**{region: "us-west-2"}),
                         node(**{region: "us-east-1"})]) == "us-west-2"
    assert infer_region([node("aws:///ap-southeast-2c/i-1")]) == "ap-southeast-2"
    assert infer_region([node(**{"topology.kubernetes.io/zone": "us-gov-west-1a"})]) \
        == "us-gov-west-1"
    info = cluster_info({"gitVersion": "v1.31.4-eks-1"}, [], None,
                        "arn:aws:eks:us-east-1:123456789012:cluster/shop-prod",
                        "2026-01-01T00:00:00Z")
    assert info["metadata"]["name"] == "shop-prod"
    assert info["spec"]["observedAt"] == "2026-01-01T00:00:00Z"


def _compact_etcd(etcd_url: str) -> int:
    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(etcd_url + path, data=json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            out: dict[str, Any] = json.loads(resp.read())
            return out

    rev = int(post("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
              ["header"]["revision"])
    post("/v3/kv/compaction", {"revision": rev, "physical": True})
    return rev


def test_expired_continue_token_restarts_the_list(empty_cluster: KubeClient,
                                                  kube_env: KubeTestEnv) -> None:
    """Compact etcd between two pages and present a continue token from before the
    compaction: the real server answers 410 Expired and the list starts again."""
    snap = generate(4, 10, seed=1, variety=False)
    seed(empty_cluster, snap["items"])
    state = {"expired": 0}

    def expire_once(call: Call) -> None:
        tokens = [v for k, v in call.query if k == "continue"]
        if call.path != PODS.path() or not tokens or state["expired"]:
            return
        state["expired"] += 1
        raw = json.loads(base64.urlsafe_b64decode(str(tokens[0]) + "=="))
        _compact_etcd(kube_env.etcd_url)
        raw["rv"] = 2  # a revision long compacted away, as after a 5-minute pause
        token = base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")
        call.query = [(k, token if k == "continue" else v) for k, v in call.query]

    empty_cluster.hooks.append(expire_once)
    try:
        result = empty_cluster.list(PODS, page_size=15)
    finally:
        empty_cluster.hooks.remove(expire_once)
    assert state["expired"] == 1
    assert result.restarts == 1
    assert len(result.items) == 40
    assert len({i["metadata"]["name"] for i in result.items}) == 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_errors_are_diagnostics_not_tracebacks(kube_env: KubeTestEnv, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def message(**kw: Any) -> str:
        with pytest.raises(DiagnosticError) as err:
            KubeSource(**kw).read()
        return str(err.value)

    cfg = json.loads(kube_env.kubeconfig_path.read_text())
    down = json.loads(json.dumps(cfg))
    down["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{_free_port()}"
    (tmp_path / "down").write_text(json.dumps(down))
    assert "cannot reach the Kubernetes API" in message(kubeconfig=str(tmp_path / "down"))
    assert "connection refused" in message(kubeconfig=str(tmp_path / "down"))

    bogus = kube_env.token_kubeconfig("not-a-real-token", tmp_path / "bogus")
    assert "rejected the credentials" in message(kubeconfig=str(bogus))

    token = kube_env.service_account_token("default", "nobody")
    nobody = kube_env.token_kubeconfig(token, tmp_path / "nobody")
    text = message(kubeconfig=str(nobody))
    assert "forbidden" in text and "system:serviceaccount:default:nobody" in text

    assert "not found" in message(kubeconfig=str(tmp_path / "missing"))
    (tmp_path / "garbage").write_text("clusters: [ {")
    assert "kubeconfig" in message(kubeconfig=str(tmp_path / "garbage"))
    text = message(kubeconfig=str(kube_env.kubeconfig_path), context="nope")
    assert "context 'nope' is not in the kubeconfig" in text and "envtest" in text

    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert "no kubeconfig found" in message()
    monkeypatch.setenv("KUBECONFIG", str(kube_env.kubeconfig_path))
    assert KubeSource().read().info.name == "envtest"  # $KUBECONFIG is honoured
