"""Every rule's verdict for one pod or one node pair, with the facts each used.

This is what a user reads when a plan says "blocked": not just the first failing rule,
but all of them, passing ones included.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from livepolicy.graph.compat import CompatibilityGraph
from livepolicy.planner.select import compile_policies, select
from livepolicy.policy.load import PolicySet
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Verdict
from livepolicy.rules.registry import (
    node_verdicts,
    pair_verdicts,
    pod_node_verdicts,
    pod_verdicts,
)


def _vs(vs: list[Verdict] | tuple[Verdict, ...]) -> list[dict[str, Any]]:
    return [v.to_json() for v in vs]


def explain_pod(key: str, graph: CompatibilityGraph, ps: PolicySet,
                now: datetime) -> dict[str, Any]:
    ctx = graph.ctx
    pod = ctx.facts.pod_by_key.get(key)
    if pod is None:
        raise KeyError(f"pod {key} not found (use namespace/name)")
    policies = compile_policies(ps)
    sel = select(ctx.facts, policies, now)
    claimed = sel.claimed.get(key)
    matching = claimed or next((p for p in policies if p.selects_workload(pod)), None)
    allow = matching.policy.spec.allow if matching else Allow()
    out: dict[str, Any] = {
        "pod": key, "node": pod.node,
        "owner": f"{pod.owner_kind.value} {pod.owner_name}".strip(),
        "policy": claimed.name if claimed else None,
        "policy_note": ("claimed by this policy (workload and source node match)" if claimed
                        else "no policy drains this pod's node for this workload"),
        "cluster": _vs(graph.cluster_verdicts),
        "pod_rules": _vs(pod_verdicts(pod, ctx, allow)),
        "source_node": _vs(node_verdicts(ctx.facts.node_by_name[pod.node], ctx))
        if pod.node in ctx.facts.node_by_name else [],
    }
    if pod.node in ctx.facts.node_by_name:
        src = ctx.facts.node_by_name[pod.node]
        dests = list(graph.destinations(pod.node))
        zone_ok = [d for d in dests if all(
            v.ok for v in pod_node_verdicts(pod, src, ctx.facts.node_by_name[d], ctx))]
        out["destinations"] = {"compatible_nodes": len(dests),
                               "accepting_volumes": len(zone_ok),
                               "examples": sorted(zone_ok)[:5]}
    return out


def explain_nodes(src_name: str, dst_name: str, graph: CompatibilityGraph) -> dict[str, Any]:
    ctx = graph.ctx
    nodes = ctx.facts.node_by_name
    for n in (src_name, dst_name):
        if n not in nodes:
            raise KeyError(f"node {n} not found")
    src, dst = nodes[src_name], nodes[dst_name]
    return {
        "source": src_name, "destination": dst_name,
        "edge": graph.has_edge(src_name, dst_name),
        "classes": [graph.class_of.get(src_name), graph.class_of.get(dst_name)],
        "cluster": _vs(graph.cluster_verdicts),
        "source_node": _vs(node_verdicts(src, ctx)),
        "destination_node": _vs(node_verdicts(dst, ctx)),
        "pair": _vs(pair_verdicts(src, dst, ctx)),
    }
