"""Orchestrates planning: facts + policies -> graph -> selection -> placement -> budgets.

Pure: no I/O and no clock (the caller passes `now`), so the same inputs always give a
byte-identical plan.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from livepolicy.core.quantity import format_duration_ms, parse_duration_ms
from livepolicy.facts.model import ClusterFacts, PodFacts
from livepolicy.graph.compat import CompatibilityGraph, build_graph
from livepolicy.planner.budgets import (
    pdb_allowance,
    pdbs_for,
    resolve_count,
    resources_of,
    schedule,
)
from livepolicy.planner.estimate import estimate, resolve_transfer
from livepolicy.planner.hashes import PodHasher, canonical_hash, fact_hash
from livepolicy.planner.labels import label_changes
from livepolicy.planner.model import Blocked, LabelChange, Migration, Plan, Reason
from livepolicy.planner.place import Capacity, Placer
from livepolicy.planner.select import CompiledPolicy, Selection, compile_policies, select
from livepolicy.policy.load import PolicySet
from livepolicy.rules.base import Context, Severity, Verdict
from livepolicy.rules.registry import pair_verdicts, pod_verdicts

__all__ = ["canonical_hash", "fact_hash", "make_plan"]  # the hashes, for apply's stale check

# Planner reasons (not rules: they depend on the whole cluster, not on one fact).
NO_EDGE = "PL001"
NO_FIT = "PL002"
PDB_ZERO = "PL003"


def _reason(v: Verdict) -> Reason:
    return Reason(v.code, v.message, v.severity.value)


class _NoEdgeExplainer:
    """Why a class has no compatible destination: the pair rules that failed most."""

    def __init__(self, graph: CompatibilityGraph) -> None:
        self.graph = graph
        self.cache: dict[str, str] = {}

    def __call__(self, node: str) -> str:
        cid = self.graph.class_of[node]
        if cid not in self.cache:
            src = self.graph.ctx.facts.node_by_name[node]
            counts: Counter[str] = Counter()
            for c in self.graph.classes:
                others = [m for m in c.members if m != node]
                if not others:
                    continue
                dst = self.graph.ctx.facts.node_by_name[others[0]]
                for v in pair_verdicts(src, dst, self.graph.ctx):
                    if v.blocks:
                        counts[v.code] += len(others)
            detail = ", ".join(f"{code} x{n}" for code, n in counts.most_common(3))
            self.cache[cid] = detail or "no other usable node"
        return self.cache[cid]


def make_plan(facts: ClusterFacts, ps: PolicySet, now: datetime) -> Plan:
    ctx = Context(facts, ps.settings)
    graph = build_graph(ctx)
    policies = compile_policies(ps)
    sel = select(facts, policies, now)
    order = {p.name: i for i, p in enumerate(policies)}

    pod_hash = PodHasher()
    # Label changes (pod index, action, pod hash) of the pods no policy claims: most pods.
    others = [(i, lc.action, pod_hash(facts.pods[i])) for i, lc in label_changes(
        facts, graph, ctx, policies, sel, set(), {}, claimed=False)]
    migrations, blocked, rule_blocked = _place(facts, ps, ctx, graph, sel, policies, order)
    key = ctx.settings.labels.migration_enabled
    changes = label_changes(facts, graph, ctx, policies, sel, {m.pod for m in migrations},
                            rule_blocked, claimed=True)
    changes += [(i, LabelChange(facts.pods[i].key, key, "true", action))
                for i, action, _ in others]
    changes.sort(key=lambda t: t[0])
    labels = [lc for _, lc in changes]
    dep_objects: dict[str, str] = {f"Pod/{facts.pods[i].key}": h for i, _, h in others}
    for m in migrations:
        pod = facts.pod_by_key[m.pod]
        dep_objects[f"Pod/{m.pod}"] = pod_hash(pod)
        for n in (m.source, m.destination):
            dep_objects[f"Node/{n}"] = fact_hash(facts.node_by_name[n])
    for lc in labels:
        pk = f"Pod/{lc.pod}"
        if pk not in dep_objects:
            dep_objects[pk] = pod_hash(facts.pod_by_key[lc.pod])
    dep_policies = {f"{kind}/{name}": canonical_hash(obj.model_dump(mode="json"))
                    for kind, objs in (("NodeTemplate", ps.templates),
                                       ("MigrationPolicy", ps.policies))
                    for name, obj in objs.items()}
    dep_policies["Settings"] = canonical_hash(ps.settings.model_dump(mode="json"))
    info = facts.info
    return Plan(
        cluster={"name": info.name, "platform": info.platform,
                 "kubernetes_version": info.kubernetes_version, "region": info.region,
                 "source": facts.source, "nodes": len(facts.nodes), "pods": len(facts.pods)},
        policies=tuple(_policy_json(p) for p in policies),
        migrations=tuple(migrations),
        blocked=tuple(sorted(blocked, key=lambda b: b.pod)),
        labels=tuple(labels),
        graph={"classes": len(graph.classes), "class_edges": graph.class_graph.number_of_edges(),
               "usable_nodes": len(graph.class_of), "nodes": len(facts.nodes)},
        dependencies={"objects": dict(sorted(dep_objects.items())),
                      "policies": dict(sorted(dep_policies.items()))},
        notes=tuple(_reason(v) for v in graph.cluster_blockers),
        stats={"pods_evaluated": len(facts.pods), "pods_selected": len(sel.claimed)},
        inputs={"cluster": facts.source, "policies": ps.root},
    )


def _place(facts: ClusterFacts, ps: PolicySet, ctx: Context, graph: CompatibilityGraph,
           sel: Selection, policies: list[CompiledPolicy], order: dict[str, int]
           ) -> tuple[list[Migration], list[Blocked], dict[str, bool]]:
    """Place every claimed pod or say why it is blocked; schedule the placed ones."""
    explain_no_edge = _NoEdgeExplainer(graph)
    placer = Placer(facts, graph, ctx, Capacity.of(facts))
    cluster_block = [_reason(v) for v in graph.cluster_blockers]
    claimed = sorted(
        ((facts.pod_by_key[k], p) for k, p in sel.claimed.items()),
        key=lambda t: (order[t[1].name], -t[0].memory_bytes, -t[0].cpu_millis, t[0].key))
    placed: list[tuple[PodFacts, CompiledPolicy, str, tuple[Reason, ...]]] = []
    blocked: list[Blocked] = []
    pdb_room = {f"{d.namespace}/{d.name}": pdb_allowance(d, facts) for d in facts.pdbs}
    rule_blocked: dict[str, bool] = {}
    for pod, pol in claimed:
        spec = pol.policy.spec
        verdicts = pod_verdicts(pod, ctx, spec.allow)
        rule_blocked[pod.key] = any(v.blocks for v in verdicts)
        reasons = list(cluster_block) + [_reason(v) for v in verdicts if v.blocks]
        notes = [_reason(v) for v in verdicts if not v.ok and not v.blocks]
        if pod.node:
            reasons += [Reason(v.code, f"source {v.message}") for v in
                        graph.node_blockers(pod.node)]
        pdbs = pdbs_for(pod, facts) if spec.budgets.honor_pod_disruption_budgets else []
        for d in pdbs:
            if pdb_room[f"{d.namespace}/{d.name}"] < 1:
                reasons.append(Reason(PDB_ZERO, f"PodDisruptionBudget {d.name} allows no "
                                                "disruption now"))
        if not reasons and graph.out_degree(pod.node) == 0:
            reasons.append(Reason(NO_EDGE, f"no node is compatible with {pod.node} "
                                           f"({explain_no_edge(pod.node)})"))
        if not reasons:
            dest, why = placer.place(pod, pol.name, pol.accepts_destination, sel.draining,
                                     spec.placement)
            if dest:
                placed.append((pod, pol, dest, tuple(notes)))
                continue
            detail = ", ".join(f"{n} {r}" for r, n in sorted(why.items(),
                                                           key=lambda kv: (-kv[1], kv[0]))[:4])
            reasons.append(Reason(NO_FIT, f"no compatible destination fits: {detail}"))
        blocked.append(Blocked(pod.key, pol.name, pod.node, tuple(reasons)))
    return _schedule(placed, facts, ps, order, pdb_room), blocked, rule_blocked


def _policy_json(p: CompiledPolicy) -> dict[str, Any]:
    s = p.policy.spec
    return {"name": p.name, "priority": s.priority, "placement": s.placement,
            "on_failure": s.on_failure,
            "budgets": s.budgets.model_dump(mode="json", by_alias=True),
            "windows": [w.model_dump(mode="json", by_alias=True) for w in s.windows]}


def _schedule(placed: list[tuple[PodFacts, CompiledPolicy, str, tuple[Reason, ...]]],
              facts: ClusterFacts, ps: PolicySet, order: dict[str, int],
              pdb_room: dict[str, int]) -> list[Migration]:
    # Schedule order: policy priority, then workload, StatefulSets from the highest ordinal
    # down (the order a rolling update uses), then pod name.
    placed = sorted(placed, key=lambda t: (order[t[1].name], t[0].workload, -t[0].ordinal,
                                           t[0].key))
    limits: dict[tuple[str, str], int] = {("cluster", "*"): ps.settings.max_parallel}
    items = []
    for i, (pod, pol, dest, _) in enumerate(placed):
        b = pol.policy.spec.budgets
        pdbs = pdbs_for(pod, facts)
        res = resources_of(pod, pod.node, dest, pol.policy, pdbs)
        per = {("policy", pol.name): b.max_parallel, ("out", pod.node): b.max_outbound_per_node,
               ("in", dest): b.max_inbound_per_node,
               ("workload", pod.workload): resolve_count(
                   b.max_unavailable_per_workload, facts.workload_replicas.get(pod.workload, 1))}
        per.update({("pdb", f"{d.namespace}/{d.name}"): pdb_room[f"{d.namespace}/{d.name}"]
                    for d in pdbs})
        for k, v in per.items():  # several policies may share a node: the tightest wins
            limits[k] = min(limits.get(k, v), v)
        items.append((f"m{i + 1:05d}", res))
    sched = schedule(items, limits)
    out = []
    for (mid, _), (pod, pol, dest, notes) in zip(items, placed, strict=True):
        spec = pol.policy.spec
        src = facts.node_by_name[pod.node]
        transfer, note = resolve_transfer(spec.strategy, src)
        est = estimate(pod, transfer, spec.strategy)
        all_notes = list(notes)
        if note:
            all_notes.append(Reason("ND005", note, Severity.INFO.value))
        budget = parse_duration_ms(spec.strategy.freeze_budget)
        if est.freeze_ms > budget:
            all_notes.append(Reason("ES001", f"estimated freeze {format_duration_ms(est.freeze_ms)}"
                                    f" exceeds the budget {spec.strategy.freeze_budget}",
                                    Severity.WARN.value))
        strategy = {"memory_transfer": transfer, "tcp": spec.strategy.tcp,
                    "max_rounds": spec.strategy.max_rounds,
                    "freeze_budget": spec.strategy.freeze_budget,
                    "progress_timeout": spec.strategy.progress_timeout}
        recover = pod.labels.get(ps.settings.labels.recover_on_origin, "").lower() == "true"
        s = sched[mid]
        out.append(Migration(
            id=mid, pod=pod.key, uid=pod.uid, workload=pod.workload, source=pod.node,
            destination=dest, policy=pol.name, strategy=strategy, estimate=est,
            cpu_millis=pod.cpu_millis, memory_request_bytes=pod.memory_bytes, wave=s.wave,
            depends_on=s.depends_on, on_failure="rollback" if recover else spec.on_failure,
            recover_on_origin=recover, notes=tuple(all_notes)))
    return out
