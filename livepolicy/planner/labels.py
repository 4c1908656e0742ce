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


def volume_shape(pod: PodFacts) -> tuple[Hashable, ...]:
    """What the rules read of a pod's volumes (kind, backend, bound, zone)."""
    return tuple([(v.kind, v.backend, v.bound, v.zone) for v in pod.volumes])


def eligible(pod: PodFacts, graph: CompatibilityGraph, ctx: Context, allow: Allow,
             rule_blocked: bool | None = None, memo: Memo | None = None) -> bool:
    """`rule_blocked` passes in a verdict the planner already computed for this pod;
    `memo` shares results between pods of the same shape (see `pod_shape`)."""
    if graph.cluster_blockers or not pod.node or not graph.usable(pod.node):
        return False
    if graph.out_degree(pod.node) == 0:
        return False
    return _eligible_on(pod, graph, ctx, allow, rule_blocked, memo,
                        _where(graph, ctx, pod.node), volume_shape(pod))


def _where(graph: CompatibilityGraph, ctx: Context, node: str) -> tuple[str, str, str]:
    """What the destination rules' answer depends on: the node's class and zone, and the
    node itself when it is the only one of its class in its zone (it is never its own
    destination)."""
    cid = graph.class_of[node]
    zone = ctx.facts.node_by_name[node].zone
    return cid, zone, node if len(graph.members_in_zone(cid, zone)) < 2 else ""


def _eligible_on(pod: PodFacts, graph: CompatibilityGraph, ctx: Context, allow: Allow,
                 rule_blocked: bool | None, memo: Memo | None, where: tuple[str, str, str],
                 volumes: tuple[Hashable, ...]) -> bool:
    if rule_blocked is None:
        if memo is None:
            rule_blocked = any(rule.blocks(pod, ctx, allow) for rule in POD_RULES)
        else:
            k = ("rules", *pod_shape(pod, ctx, allow), volumes)
            found = memo.get(k)
            if found is None:
                found = memo[k] = any(rule.blocks(pod, ctx, allow) for rule in POD_RULES)
            rule_blocked = found
    if rule_blocked:
        return False
    zk = ("zones", where, volumes)
    if memo is not None:
        found = memo.get(zk)
        if found is not None:
            return found
    relevant = [r for r in POD_NODE_RULES if r.relevant(pod)]
    nodes = ctx.facts.node_by_name
    src = nodes[pod.node]
    # Pod-destination rules read the destination's zone only: one node per zone will do.
    ok = not relevant or any(all(not r.check(pod, src, nodes[d], ctx).blocks for r in relevant)
                             for d in graph.zone_representatives(pod.node))
    if memo is not None:
        memo[zk] = ok
    return ok


def pod_shape(pod: PodFacts, ctx: Context, allow: Allow) -> tuple[Hashable, ...]:
    """Everything the pod rules read besides the volumes (`volume_shape`), as a key:
    replicas of a workload share it, so the rules run once per shape. Keep in step with
    the pod rules; tests/planner/test_labels_shape.py checks the memoised and plain
    results agree."""
    return (id(allow), pod.phase, pod.deleting, bool(pod.node),
            pod.labels.get(ctx.settings.labels.opt_out), pod.owner_kind, id(pod.containers))


class _PolicyOf:
    """The first policy whose workload selector takes a pod, memoised on what the
    selectors read (namespace, owner kind and the labels they name)."""

    def __init__(self, policies: list[CompiledPolicy]) -> None:
        self.policies = policies
        self.keys = tuple(sorted({r.key for p in policies
                                  for r in p.workload_selector.requirements}))
        self.memo: dict[tuple[object, ...], CompiledPolicy | None] = {}

    def __call__(self, pod: PodFacts) -> CompiledPolicy | None:
        labels = pod.labels
        k = (pod.namespace, pod.owner_kind, *[labels.get(key) for key in self.keys])
        if k not in self.memo:
            self.memo[k] = next((p for p in self.policies if p.selects_workload(pod)), None)
        return self.memo[k]


def plan_labels(facts: ClusterFacts, graph: CompatibilityGraph, ctx: Context,
                policies: list[CompiledPolicy], sel: Selection, migrating: set[str],
                rule_blocked: dict[str, bool]) -> list[LabelChange]:
    return [lc for _, lc in label_changes(facts, graph, ctx, policies, sel, migrating,
                                          rule_blocked)]


def label_changes(facts: ClusterFacts, graph: CompatibilityGraph, ctx: Context,
                  policies: list[CompiledPolicy], sel: Selection, migrating: set[str],
                  rule_blocked: dict[str, bool], claimed: bool | None = None
                  ) -> list[tuple[int, LabelChange]]:
    """Label changes with the index of their pod in `facts.pods`. `claimed` limits them to
    the pods some policy claims (True) or to the others (False): those never migrate and
    have no verdict yet, so they can be assessed while the claimed ones are placed."""
    key = ctx.settings.labels.migration_enabled
    out = []
    default_allow = Allow()
    memo: Memo = {}
    policy_of = _PolicyOf(policies)
    by_policy = sel.claimed
    # Per node: None when no pod on it can qualify, else what destination answers read.
    where: dict[str, tuple[str, str, str] | None] = {
        n.name: _where(graph, ctx, n.name) if not graph.cluster_blockers and graph.usable(
            n.name) and graph.out_degree(n.name) > 0 else None for n in facts.nodes}
    for i, pod in enumerate(facts.pods):
        pod_key = pod.key
        pol = by_policy.get(pod_key)
        if claimed is not None and (pol is not None) != claimed:
            continue
        if pod_key in migrating:
            ok = True
        else:
            at = where.get(pod.node) if pod.node else None
            if at is None:
                ok = False
            else:
                pol = pol or policy_of(pod)
                allow = pol.policy.spec.allow if pol else default_allow
                ok = _eligible_on(pod, graph, ctx, allow, rule_blocked.get(pod_key), memo, at,
                                  volume_shape(pod))
        has = pod.labels.get(key) == "true"
        if ok and not has:
            out.append((i, LabelChange(pod_key, key, "true", "add")))
        elif has and not ok:
            out.append((i, LabelChange(pod_key, key, "true", "remove")))
    return out
