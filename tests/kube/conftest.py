"""One real kube-apiserver + etcd for every test under tests/kube (session scope).

Tests that read the whole cluster start from an empty one (`empty_cluster` wipes what
earlier tests left). The scale tests run last, so nothing has to wipe their 20,000 pods.
Missing binaries fail the tests with the setup script's name; they are never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livepolicy.kube.client import KubeClient
from tests.kube.seed import wipe
from tests.support.envtest import KubeTestEnv, kube_test_env

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [i for i in items if Path(str(i.fspath)).resolve().is_relative_to(HERE)]
    for item in mine:
        item.add_marker(pytest.mark.kube)
    # Slow (scale) tests last: they leave 25,000 objects that nobody needs to wipe.
    slow = [i for i in mine if i.get_closest_marker("slow")]
    if slow:
        rest = [i for i in items if i not in slow]
        items[:] = rest + slow


@pytest.fixture(scope="session")
def kube_env() -> Iterator[KubeTestEnv]:
    yield from kube_test_env()


@pytest.fixture(scope="session")
def kube(kube_env: KubeTestEnv) -> Iterator[KubeClient]:
    """An admin client of the shared apiserver."""
    with KubeClient.from_config(str(kube_env.kubeconfig_path)) as client:
        yield client


@pytest.fixture()
def empty_cluster(kube: KubeClient) -> KubeClient:
    """The shared apiserver with no nodes, pods, workloads, volumes or ENIConfigs."""
    wipe(kube)
    kube.hooks.clear()
    return kube


def name_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])
