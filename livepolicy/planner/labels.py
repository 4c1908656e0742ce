"""Plan the migration-enabled label: true on every pod that could live-migrate now.

"Could" means the pod passes every pod rule (with the allowances of the policy that
would move it), its node passes the node rules, and some compatible destination accepts
its volumes. Pods that stopped qualifying lose the label (continuous assessment).
"""

from __future__ import annotations

from collections.abc import Hashable

from livepolicy.facts.model import ClusterFacts, PodFacts
from livepolicy.graph.compat import CompatibilityGraph
from livepolicy.planner.model import LabelChange
from livepolicy.planner.select import CompiledPolicy, Selection
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context
from livepolicy.rules.registry import POD_NODE_RULES, POD_RULES

Memo = dict[Hashable, bool]


def eligible(pod: PodFacts, graph: CompatibilityGraph, ctx: Context, allow: Allow,
             rule_blocked: bool | None = None, memo: Memo | None = None) -> bool:
    """`rule_blocked` passes in a verdict the planner already computed for this pod;
    `memo` shares results between pods of the same shape (see `pod_shape`)."""
    if graph.cluster_blockers or not pod.node or not graph.usable(pod.node):
        return False
    if graph.out_degree(pod.node) == 0:
        return False
    if rule_blocked is None:
        if memo is None:
            rule_blocked = any(rule.blocks(pod, ctx, allow) for rule in POD_RULES)
        else:
            k = ("rules", *pod_shape(pod, ctx, allow))
            found = memo.get(k)
            if found is None:
                found = memo[k] = any(rule.blocks(pod, ctx, allow) for rule in POD_RULES)
            rule_blocked = found
    if rule_blocked:
        return False
    relevant = [r for r in POD_NODE_RULES if r.relevant(pod)]
    if not relevant:
        return True
    nodes = ctx.facts.node_by_name
    src = nodes[pod.node]
    # The answer depends on the source's class and zone, except when the source is the only
    # node of its class in its zone (it is never its own destination): then on the node.
    cid = graph.class_of[pod.node]
    alone = len(graph.members_in_zone(cid, src.zone)) < 2
    zk = ("zones", cid, src.zone, pod.node if alone else "",
          tuple((v.kind, v.backend, v.zone) for v in pod.volumes))
    if memo is not None and zk in memo:
        return memo[zk]
    # Pod-destination rules read the destination's zone only: one node per zone will do.
    ok = any(all(not r.check(pod, src, nodes[d], ctx).blocks for r in relevant)
             for d in graph.zone_representatives(pod.node))
    if memo is not None:
        memo[zk] = ok
    return ok





def pod_shape(pod: PodFacts, ctx: Context, allow: Allow) -> tuple[Hashable, ...]:
    """Everything the pod rules read, as a key: replicas of a workload share it, so the
    rules run once per shape. Keep in step with the pod rules;
    tests/planner/test_labels_shape.py checks the memoised and plain results agree."""
    return (id(allow), pod.phase, pod.deleting, bool(pod.node),
            pod.labels.get(ctx.settings.labels.opt_out), pod.owner_kind, id(pod.containers),
            tuple((v.kind, v.backend, v.bound) for v in pod.volumes))


def plan_labels(facts: ClusterFacts, graph: CompatibilityGraph, ctx: Context,
                policies: list[CompiledPolicy], sel: Selection, migrating: set[str],
                rule_blocked: dict[str, bool]) -> list[LabelChange]:
    key = ctx.settings.labels.migration_enabled
    out = []
    default_allow = Allow()
    memo: Memo = {}
    for pod in facts.pods:
        pod_key = pod.key
        pol = sel.claimed.get(pod_key) or next(
            (p for p in policies if p.selects_workload(pod)), None)
        allow = pol.policy.spec.allow if pol else default_allow
        ok = pod_key in migrating or eligible(pod, graph, ctx, allow,
                                              rule_blocked.get(pod_key), memo)
        has = pod.labels.get(key) == "true"
        if ok and not has:
            out.append(LabelChange(pod_key, key, "true", "add"))
        elif has and not ok:
            out.append(LabelChange(pod_key, key, "true", "remove"))
    return out
