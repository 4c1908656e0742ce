"""Budgets turned into a dependency DAG that can never exceed them.

Each limited resource (cluster-wide and per-policy parallelism, outbound and inbound per
node, per workload, per PodDisruptionBudget) with limit k gets k *lanes*. Every migration
takes one lane of each resource it uses and depends on the previous migration in each of
those lanes. A lane runs one migration at a time, so however the DAG is walked, no more
than k migrations hold a resource at once. Lanes are chosen greedily (earliest free), which
is list scheduling; a migration's wave is its depth in the DAG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from livepolicy.facts.model import ClusterFacts, PdbFacts, PodFacts
from livepolicy.policy.models import MigrationPolicy

Resource = tuple[str, str]


def resolve_count(value: int | str, total: int) -> int:
    """A count, or a percentage of `total` rounded up (so 10% of 3 pods allows 1)."""
    if isinstance(value, int):
        return value
    return math.ceil(int(value.rstrip("%")) * total / 100)


def pdb_allowance(pdb: PdbFacts, facts: ClusterFacts) -> int:
    """Disruptions a PDB allows now: from its status when known, else from its spec."""
    if pdb.disruptions_allowed is not None:
        return pdb.disruptions_allowed
    healthy = sum(1 for p in facts.pods if p.namespace == pdb.namespace
                  and p.phase == "Running" and pdb.selector.matches(p.labels))
    if pdb.min_available:
        v: int | str = int(pdb.min_available) if pdb.min_available.isdigit() \
            else pdb.min_available
        return max(0, healthy - resolve_count(v, healthy))
    if pdb.max_unavailable:
        v = int(pdb.max_unavailable) if pdb.max_unavailable.isdigit() else pdb.max_unavailable
        return max(0, resolve_count(v, healthy))
    return healthy


def pdbs_for(pod: PodFacts, facts: ClusterFacts) -> list[PdbFacts]:
    """PDBs covering a pod; memoised per namespace and the values of the labels that
    namespace's PDB selectors read (replicas share them; a StatefulSet's pods differ only
    in labels no selector reads)."""
    in_ns = facts.pdbs_by_namespace.get(pod.namespace)
    if not in_ns:
        return []
    read = facts.memo.setdefault("pdb_label_keys", {})
    keys = read.get(pod.namespace)
    if keys is None:
        keys = read[pod.namespace] = tuple(sorted({r.key for d in in_ns
                                                   for r in d.selector.requirements}))
    labels = pod.labels
    key = (pod.namespace, *[labels.get(k) for k in keys])
    cache = facts.memo.setdefault("pdbs_for", {})
    if key not in cache:
        cache[key] = [d for d in in_ns if not d.selector.empty and d.selector.matches(labels)]
    found: list[PdbFacts] = cache[key]
    return found


@dataclass(frozen=True)
class Scheduled:
    wave: int
    depends_on: tuple[str, ...]


def resources_of(pod: PodFacts, src: str, dst: str, policy: MigrationPolicy,
                 pdbs: Sequence[PdbFacts]) -> list[Resource]:
    res = [("cluster", "*"), ("policy", policy.metadata.name), ("out", src), ("in", dst),
           ("workload", pod.workload)]
    if policy.spec.budgets.honor_pod_disruption_budgets:
        res += [("pdb", f"{d.namespace}/{d.name}") for d in pdbs]
    return res


def schedule(items: Sequence[tuple[str, list[Resource]]],
             limits: dict[Resource, int]) -> dict[str, Scheduled]:
    """Assign lanes in the given order; returns each migration's wave and dependencies."""
    lanes: dict[Resource, list[tuple[int, str]]] = {}
    out: dict[str, Scheduled] = {}
    for mid, resources in items:
        chosen: list[tuple[Resource, int]] = []
        deps: set[str] = set()
        wave = 1
        for res in resources:
            tails = lanes.setdefault(res, [])
            if len(tails) < max(1, limits[res]):
                chosen.append((res, len(tails)))
                tails.append((0, ""))
                continue
            idx = min(range(len(tails)), key=lambda i: (tails[i][0], i))
            chosen.append((res, idx))
            tail_wave, tail_id = tails[idx]
            wave = max(wave, tail_wave + 1)
            deps.add(tail_id)
        for res, idx in chosen:
            lanes[res][idx] = (wave, mid)
        out[mid] = Scheduled(wave, tuple(sorted(deps)))
    return out
