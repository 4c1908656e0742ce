"""Smoke test for the real kube-apiserver + etcd test environment (tests/support/envtest.py).

It proves the pieces later integration tests rely on: the binaries built by
scripts/setup-kube-testenv.sh start on loopback, the official `kubernetes` client
works with the generated kubeconfig, /version reports the pinned release, and RBAC
is enforced for ServiceAccount tokens. Missing binaries fail the test (with the
name of the setup script) instead of skipping it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client import ApiException

from tests.support.envtest import (
    PINNED_ETCD_VERSION,
    PINNED_KUBE_VERSION,
    SETUP_SCRIPT,
    KubeTestEnv,
    kube_test_env,
)

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]

# The kubernetes package ships py.typed but leaves this loader unannotated.
_new_client_from_config: Callable[..., client.ApiClient] = config.new_client_from_config


def client_from_kubeconfig(path: Path) -> client.ApiClient:
    """An ApiClient configured only from the kubeconfig file, as a user's tool would be."""
    return _new_client_from_config(config_file=str(path))


@pytest.fixture(scope="module")
def kube_env() -> Iterator[KubeTestEnv]:
    yield from kube_test_env()


@pytest.fixture(scope="module")
def admin_client(kube_env: KubeTestEnv) -> Iterator[client.ApiClient]:
    with client_from_kubeconfig(kube_env.kubeconfig_path) as api:
        yield api


def test_pinned_versions_match_setup_script() -> None:
    script = (REPO / SETUP_SCRIPT).read_text()
    assert re.search(rf"^K8S_VERSION={re.escape(PINNED_KUBE_VERSION)}\b", script, re.M)
    assert re.search(rf"^ETCD_VERSION={re.escape(PINNED_ETCD_VERSION)}\b", script, re.M)


def test_version_reports_pinned_release(admin_client: client.ApiClient) -> None:
    info = client.VersionApi(admin_client).get_code()
    assert info.git_version == PINNED_KUBE_VERSION
    assert info.major == "1"
    assert info.minor == PINNED_KUBE_VERSION.split(".")[1]


def test_create_and_list_node_and_pod(admin_client: client.ApiClient) -> None:
    core = client.CoreV1Api(admin_client)
    core.create_node(
        client.V1Node(
            metadata=client.V1ObjectMeta(name="smoke-node", labels={"livepolicy/test": "smoke"})
        )
    )
    core.create_namespaced_pod(
        "default",
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="smoke-pod", labels={"app": "smoke"}),
            spec=client.V1PodSpec(
                node_name="smoke-node",
                containers=[client.V1Container(name="main", image="registry.invalid/smoke:1")],
            ),
        ),
    )

    nodes = core.list_node(label_selector="livepolicy/test=smoke").items
    assert [n.metadata.name for n in nodes if n.metadata] == ["smoke-node"]
    pods = core.list_namespaced_pod("default", label_selector="app=smoke").items
    assert [p.metadata.name for p in pods if p.metadata] == ["smoke-pod"]
    assert pods[0].spec is not None
    assert pods[0].spec.node_name == "smoke-node"


def test_service_account_without_rbac_is_forbidden(kube_env: KubeTestEnv) -> None:
    token = kube_env.service_account_token("default", "no-rbac")
    with (
        client_from_kubeconfig(kube_env.token_kubeconfig(token)) as api,
        pytest.raises(ApiException) as err,
    ):
        client.CoreV1Api(api).list_node()
    assert err.value.status == 403
    # 403, not 401: the token authenticated as the ServiceAccount; RBAC said no.
    assert "system:serviceaccount:default:no-rbac" in str(err.value.body)
    # The dependency-free helper sees the same.
    status, _ = kube_env.request("GET", "/api/v1/nodes", token=token)
    assert status == 403
