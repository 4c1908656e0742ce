"""The controller's RBAC, proven on the real API server: a ServiceAccount with exactly
the rules of docs/controller.md runs it to convergence (policies from a ConfigMap,
Lease election, label writes) without a single 403, and may do nothing more."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import CONFIGMAPS, NODES, PODS
from tests.conftest import ROOT
from tests.controller.support import (
    LEASE_NS,
    POLICIES,
    converged,
    metric,
    options,
    running,
    scrape,
    seed_synth,
    wait_for,
)
from tests.kube.test_rbac import RBAC_KINDS
from tests.support.envtest import KubeTestEnv

pytestmark = pytest.mark.kube
SA = "livepolicy-controller"


def documented_rbac() -> list[dict[str, Any]]:
    text = (ROOT / "docs" / "controller.md").read_text()
    block = re.search(r"<!-- rbac:start -->\s*```yaml\n(.*?)```\s*<!-- rbac:end -->", text,
                      re.S)
    assert block, "docs/controller.md lost its RBAC block"
    return [d for d in YAML(typ="safe", pure=True).load_all(block.group(1)) if d]


@pytest.fixture()
def sa_client(empty_cluster: KubeClient, kube_env: KubeTestEnv, tmp_path: Path
              ) -> Iterator[KubeClient]:
    token = kube_env.service_account_token(LEASE_NS, SA)
    made = []
    for doc in documented_rbac():
        res = RBAC_KINDS[doc["kind"]]
        ns = doc["metadata"].get("namespace")
        try:
            empty_cluster.create(res, doc, ns)
            made.append((res, doc["metadata"]["name"], ns))
        except KubeError as exc:
            if exc.status != 409:
                raise
            empty_cluster.replace(res, doc, ns)
    client = KubeClient.from_config(str(kube_env.token_kubeconfig(token,
                                                                  tmp_path / "sa.json")))
    yield client
    client.close()
    for res, name, ns in made:
        empty_cluster.delete(res, name, ns)


def test_documented_rbac_is_enough(empty_cluster: KubeClient, sa_client: KubeClient) -> None:
    seed_synth(empty_cluster)
    name = f"policies-{uuid.uuid4().hex[:6]}"
    empty_cluster.create(CONFIGMAPS, {"metadata": {"name": name}, "data": {
        "bench.yaml": (POLICIES / "bench.yaml").read_text()}}, LEASE_NS)
    try:
        opts = options(policies_dir="", policies_configmap=f"{LEASE_NS}/{name}")
        with running("", opts, sa_client, admin=empty_cluster) as (ctl, log):
            wait_for("convergence as the ServiceAccount", lambda: converged(empty_cluster))
            assert scrape(ctl, "/readyz")[0] == 200
            assert metric(scrape(ctl)[1], "livepolicy_controller_is_leader") == 1
            assert not log.grep("forbidden") and not log.grep("403"), log.lines
    finally:
        empty_cluster.delete(CONFIGMAPS, name, LEASE_NS)

    # And nothing more: no deletes, no node or ConfigMap writes, no Secrets.
    pod = empty_cluster.list(PODS).items[0]["metadata"]
    denied: list[Callable[[], object]] = [
        lambda: sa_client.delete(PODS, pod["name"], pod["namespace"]),
        lambda: sa_client.patch(NODES, empty_cluster.list(NODES).items[0]["metadata"]["name"],
                                {"metadata": {"labels": {"x": "y"}}}),
        lambda: sa_client.create(CONFIGMAPS, {"metadata": {"name": "x"}}, LEASE_NS),
        lambda: sa_client.request("GET", "/api/v1/namespaces/kube-system/secrets"),
        lambda: sa_client.request("GET", "/api/v1/namespaces/default/configmaps"),
    ]
    for call in denied:
        with pytest.raises(KubeError) as exc:
            call()
        assert exc.value.status == 403
