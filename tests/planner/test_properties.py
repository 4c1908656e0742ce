"""Invariants of every plan, over random clusters and policies (hypothesis)."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livepolicy.facts.kubeobjects import build_facts
from livepolicy.facts.model import ClusterFacts
from livepolicy.graph.compat import build_graph
from livepolicy.planner.budgets import resources_of
from livepolicy.planner.model import Plan
from livepolicy.planner.plan import make_plan
from livepolicy.planner.serialize import dumps, plan_document
from livepolicy.policy.load import PolicySet, load_policy_set
from livepolicy.rules.base import Context
from tests.planner.strategies import cluster, policy_docs

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def facts_of(items: list[dict[str, Any]]) -> ClusterFacts:
    problems: list[tuple[str, str]] = []
    facts = build_facts(items, lambda p, m: problems.append((p, m)))
    assert not problems, problems
    return facts


def policies_of(docs: list[dict[str, Any]], tmp: Path) -> PolicySet:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "p.yaml").write_text(yaml.safe_dump_all(docs))
    return load_policy_set(tmp)


def plan_for(items: list[dict[str, Any]], docs: list[dict[str, Any]],
             tmp: Path) -> tuple[ClusterFacts, PolicySet, Plan]:
    facts = facts_of(items)
    ps = policies_of(docs, tmp)
    return facts, ps, make_plan(facts, ps, NOW)


SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@SETTINGS
@given(items=cluster(), docs=policy_docs())
def test_plan_invariants(items: list[dict[str, Any]], docs: list[dict[str, Any]],
                         tmp_path_factory: Any) -> None:
    facts, ps, plan = plan_for(items, docs, tmp_path_factory.mktemp("p"))
    graph = build_graph(Context(facts, ps.settings))
    nodes = facts.node_by_name
    migrated = {m.pod for m in plan.migrations}
    blocked = {b.pod for b in plan.blocked}
    assert not migrated & blocked, "a pod is both migrated and blocked"
    assert len(migrated) == len(plan.migrations), "a pod is migrated twice"
    sources = {m.source for m in plan.migrations}
    for m in plan.migrations:
        assert graph.has_edge(m.source, m.destination), f"{m.pod} leaves the graph"
        assert m.destination not in sources, "a drained node is a destination"
        assert not nodes[m.destination].unschedulable, "a cordoned node is a destination"
    # Capacity: what the plan adds to a node fits in what was free.
    for name, n in nodes.items():
        incoming = [facts.pod_by_key[m.pod] for m in plan.migrations if m.destination == name]
        if not incoming:
            continue
        staying = [p for p in facts.pods_by_node.get(name, []) if p.phase == "Running"]
        assert sum(p.cpu_millis for p in staying + incoming) <= n.cpu_millis
        assert sum(p.memory_bytes for p in staying + incoming) <= n.memory_bytes
        assert len(staying) + len(incoming) <= n.pods


@SETTINGS
@given(items=cluster(), docs=policy_docs(), durations=st.lists(st.integers(1, 50),
                                                              min_size=40, max_size=40))
def test_budgets_hold_under_any_timing(items: list[dict[str, Any]], docs: list[dict[str, Any]],
                                       durations: list[int], tmp_path_factory: Any) -> None:
    """Walk the DAG greedily (start every ready migration at once) with random durations."""
    facts, ps, plan = plan_for(items, docs, tmp_path_factory.mktemp("p"))
    by_id = {m.id: m for m in plan.migrations}
    limits: dict[tuple[str, str], int] = {("cluster", "*"): ps.settings.max_parallel}
    res_of = {}
    for m in plan.migrations:
        pol = ps.policies[m.policy]
        b = pol.spec.budgets
        pod = facts.pod_by_key[m.pod]
        from livepolicy.planner.budgets import pdb_allowance, pdbs_for, resolve_count
        pdbs = pdbs_for(pod, facts)
        res_of[m.id] = resources_of(pod, m.source, m.destination, pol, pdbs)
        for k, v in ((("policy", m.policy), b.max_parallel),
                     (("out", m.source), b.max_outbound_per_node),
                     (("in", m.destination), b.max_inbound_per_node),
                     (("workload", m.workload), resolve_count(
                         b.max_unavailable_per_workload,
                         facts.workload_replicas.get(m.workload, 1)))):
            limits[k] = min(limits.get(k, v), v)
        for d in pdbs:
            limits[("pdb", f"{d.namespace}/{d.name}")] = pdb_allowance(d, facts)
    done: set[str] = set()
    running: list[tuple[int, str]] = []
    started: set[str] = set()
    clock = 0
    while len(done) < len(by_id):
        for mid, m in sorted(by_id.items()):
            if mid not in started and all(d in done for d in m.depends_on):
                started.add(mid)
                heapq.heappush(running, (clock + durations[int(mid[1:]) % len(durations)], mid))
        active = [mid for _, mid in running]
        for res, limit in limits.items():
            using = sum(1 for mid in active if res in res_of[mid])
            assert using <= max(limit, 1), f"{res} runs {using} > {limit}"
        assert running, "DAG deadlocked"
        clock, mid = heapq.heappop(running)
        done.add(mid)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=cluster(), docs=policy_docs())
def test_plan_is_deterministic(items: list[dict[str, Any]], docs: list[dict[str, Any]],
                               tmp_path_factory: Any) -> None:
    tmp = tmp_path_factory.mktemp("p")
    _, _, a = plan_for(items, docs, tmp)
    _, _, b = plan_for(list(reversed(items)), docs, tmp)
    assert dumps(plan_document(a)) == dumps(plan_document(b))
