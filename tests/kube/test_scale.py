"""Pagination at scale: 5,000 nodes and 20,000 pods created through the real API, read
back by KubeSource in pages of 500 (never one 20,000-pod response).

Slow (about 80 s on a 2-core machine, nearly all of it creating the objects), but
it runs in CI: it is the only proof that pagination holds at a realistic size. It runs
last in tests/kube (see conftest), so nobody has to delete what it creates.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from livepolicy.facts.kube import KubeSource
from livepolicy.kube.client import Call, KubeClient
from livepolicy.kube.resources import NAMESPACES, NODES, PODS
from tests.kube.seed import parallel

pytestmark = [pytest.mark.kube, pytest.mark.slow]

NODES_N = 5_000
PODS_N = 20_000
NAMESPACES_N = 20
CREATE_BUDGET_S = 200.0  # measured ~100 s here; fail loudly well before CI times out


def node(i: int) -> dict[str, object]:
    zone = "abc"[i % 3]
    return {"metadata": {"name": f"scale-node-{i:05d}", "labels": {
        "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "m5.large",
        "topology.kubernetes.io/zone": f"us-east-1{zone}",
        "topology.kubernetes.io/region": "us-east-1"}},
        "spec": {"providerID": f"aws:///us-east-1{zone}/i-{i:017x}"}}


def pod(i: int) -> tuple[str, dict[str, object]]:
    return f"scale-{i % NAMESPACES_N:02d}", {
        "metadata": {"name": f"app-{i:05d}", "labels": {"app": f"app-{i % 50}"}},
        "spec": {"nodeName": f"scale-node-{i % NODES_N:05d}",
                 "containers": [{"name": "app", "image": "registry.invalid/app:1",
                                 "resources": {"requests": {"cpu": "50m",
                                                            "memory": "64Mi"}}}]}}


def test_kube_source_pages_through_5000_nodes_and_20000_pods(
        empty_cluster: KubeClient, record_property: Callable[[str, object], None]) -> None:
    kube = empty_cluster
    t0 = time.perf_counter()
    parallel(lambda i: kube.create(NAMESPACES, {"metadata": {"name": f"scale-{i:02d}"}}),
             range(NAMESPACES_N))
    parallel(lambda i: kube.create(NODES, node(i)), range(NODES_N), workers=24)
    t_nodes = time.perf_counter()

    def create_pod(i: int) -> None:
        ns, body = pod(i)
        kube.create(PODS, body, ns)

    parallel(create_pod, range(PODS_N), workers=24)
    created = time.perf_counter() - t0
    assert created < CREATE_BUDGET_S, f"creating the objects took {created:.0f} s"

    largest: dict[str, int] = {}

    def watch_sizes(call: Call) -> None:  # every list call must ask for a bounded page
        if call.method == "GET" and call.path in (PODS.path(), NODES.path()):
            limits = [int(v) for k, v in call.query if k == "limit"]
            assert limits and limits[0] <= 500, call
            largest[call.path] = max(largest.get(call.path, 0), limits[0])

    kube.hooks.append(watch_sizes)
    pages_before = kube.stats.pages
    source = KubeSource(client=kube)
    t1 = time.perf_counter()
    facts = source.read()
    read_s = time.perf_counter() - t1
    kube.hooks.remove(watch_sizes)

    assert len(facts.nodes) == NODES_N
    assert len(facts.pods) == PODS_N
    assert len({p.key for p in facts.pods}) == PODS_N
    assert source.report.pages["Pod"] == PODS_N // 500  # 40 pages, none bigger than 500
    assert source.report.pages["Node"] == NODES_N // 500
    assert source.report.pages["Pod"] > 1 and source.report.pages["Node"] > 1
    assert kube.stats.pages - pages_before >= 50
    assert largest == {PODS.path(): 500, NODES.path(): 500}
    assert facts.info.platform == "eks" and facts.info.region == "us-east-1"
    figures = {"create_nodes_s": round(t_nodes - t0, 1), "create_total_s": round(created, 1),
               "read_s": round(read_s, 2), "list_s": round(source.report.list_seconds, 2),
               "build_s": round(source.report.build_seconds, 2)}
    for k, v in figures.items():
        record_property(k, v)
    print(f"\nscale: {figures}")
