"""Plan the migration-enabled label: true on every pod that could live-migrate now.

"Could" means the pod passes every pod rule (with the allowances of the policy that
would move it), its node passes the node rules, and some compatible destination accepts
its volumes. Pods that stopped qualifying lose the label (continuous assessment).
"""

from __future__ import annotations

from livepolicy.facts.model import ClusterFacts, PodFacts
from livepolicy.graph.compat import CompatibilityGraph
from livepolicy.planner.model import LabelChange
from livepolicy.planner.select import CompiledPolicy, Selection
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context
from livepolicy.rules.registry import POD_NODE_RULES, POD_RULES


def eligible(pod: PodFacts, graph: CompatibilityGraph, ctx: Context, allow: Allow,
             rule_blocked: bool | None = None) -> bool:
    """`rule_blocked` passes in a verdict the planner already computed for this pod."""
    if graph.cluster_blockers or not pod.node or not graph.usable(pod.node):
        return False
    if rule_blocked is None:
        rule_blocked = any(rule.blocks(pod, ctx, allow) for rule in POD_RULES)
    if rule_blocked:
        return False
    if graph.out_degree(pod.node) == 0:
        return False
    relevant = [r for r in POD_NODE_RULES if r.relevant(pod)]
    if not relevant:
        return True
    nodes = ctx.facts.node_by_name
    src = nodes[pod.node]
    # Pod-destination rules read the destination's zone only: one node per zone will do.
    for d in graph.zone_representatives(pod.node):
        if all(not r.check(pod, src, nodes[d], ctx).blocks for r in relevant):
            return True
    return False


def plan_labels(facts: ClusterFacts, graph: CompatibilityGraph, ctx: Context,
                policies: list[CompiledPolicy], sel: Selection, migrating: set[str],
                rule_blocked: dict[str, bool]) -> list[LabelChange]:
    key = ctx.settings.labels.migration_enabled
    out = []
    for pod in facts.pods:
        pod_key = pod.key
        pol = sel.claimed.get(pod_key) or next(
            (p for p in policies if p.selects_workload(pod)), None)
        allow = pol.policy.spec.allow if pol else Allow()
        ok = pod_key in migrating or eligible(pod, graph, ctx, allow, rule_blocked.get(pod_key))
        has = pod.labels.get(key) == "true"
        if ok and not has:
            out.append(LabelChange(pod_key, key, "true", "add"))
        elif has and not ok:
            out.append(LabelChange(pod_key, key, "true", "remove"))
    return out
