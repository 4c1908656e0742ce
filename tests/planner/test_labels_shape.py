"""Label eligibility computed once per pod shape equals computing it for every pod."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings

from livepolicy.cli.common import load_facts, load_policies
from livepolicy.facts.kubeobjects import build_facts
from livepolicy.facts.model import ClusterFacts
from livepolicy.graph.compat import build_graph
from livepolicy.planner.labels import eligible, plan_labels
from livepolicy.planner.select import compile_policies, select
from livepolicy.policy.load import PolicySet
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context
from tests.planner.strategies import cluster

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def check(facts: ClusterFacts, ps: PolicySet) -> None:
    ctx = Context(facts, ps.settings)
    graph = build_graph(ctx)
    policies = compile_policies(ps)
    sel = select(facts, policies, NOW)
    got = {(lc.pod, lc.action) for lc in plan_labels(facts, graph, ctx, policies, sel,
                                                      set(), {})}
    want = set()
    for pod in facts.pods:
        pol = next((p for p in policies if p.selects_workload(pod)), None)
        ok = eligible(pod, graph, ctx, pol.policy.spec.allow if pol else Allow())
        has = pod.labels.get(ctx.settings.labels.migration_enabled) == "true"
        if ok != has:
            want.add((pod.key, "add" if ok else "remove"))
    assert got == want


def test_shapes_on_the_example() -> None:
    check(load_facts("examples/cluster.yaml"), load_policies("examples/policies"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=cluster())
def test_shapes_on_random_clusters(items: list[dict[str, Any]]) -> None:
    check(build_facts(items, lambda p, m: None), load_policies("tests/cases/basic/policies.yaml"))
