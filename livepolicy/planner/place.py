"""Placement: a destination for each claimed pod that is compatible and fits.

Fit means: a compatible-graph edge, the policy's destinations, not drained or cordoned,
the pod's nodeSelector, required node affinity and tolerations, its volumes' zone, and
free CPU, memory and pod slots after everything the plan already placed there.
`binpack` fills the fullest node that fits (first fit over nodes sorted fullest first);
`spread` takes the emptiest (a max-heap on free memory).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from livepolicy.facts.model import ClusterFacts, NodeFacts, PodFacts
from livepolicy.graph.compat import CompatibilityGraph
from livepolicy.rules.base import Context
from livepolicy.rules.registry import pod_node_verdicts

_TERMINAL = ("Succeeded", "Failed")


@dataclass
class Capacity:
    """Free resources per node, updated as the plan places pods."""

    cpu: dict[str, int] = field(default_factory=dict)
    mem: dict[str, int] = field(default_factory=dict)
    pods: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, facts: ClusterFacts) -> Capacity:
        cap = cls({n.name: n.cpu_millis for n in facts.nodes},
                  {n.name: n.memory_bytes for n in facts.nodes},
                  {n.name: n.pods for n in facts.nodes})
        for p in facts.pods:
            if p.node in cap.cpu and p.phase not in _TERMINAL:
                cap.cpu[p.node] -= p.cpu_millis
                cap.mem[p.node] -= p.memory_bytes
                cap.pods[p.node] -= 1
        return cap

    def fits(self, pod: PodFacts, node: str) -> str:
        if self.pods[node] < 1:
            return "no free pod slot"
        if self.cpu[node] < pod.cpu_millis:
            return "not enough CPU"
        if self.mem[node] < pod.memory_bytes:
            return "not enough memory"
        return ""

    def take(self, pod: PodFacts, node: str) -> None:
        self.cpu[node] -= pod.cpu_millis
        self.mem[node] -= pod.memory_bytes
        self.pods[node] -= 1


def scheduling_mismatch(pod: PodFacts, node: NodeFacts) -> str:
    """Why the scheduler would refuse this node for this pod ('' when it would accept)."""
    for k, v in pod.node_selector.items():
        if node.labels.get(k) != v:
            return f"nodeSelector {k}={v}"
    if not pod.affinity.matches(node.labels, node.name):
        return "required node affinity"
    for t in node.taints:
        if t.effect in ("NoSchedule", "NoExecute") and not any(
                tol.tolerates(t) for tol in pod.tolerations):
            return f"untolerated taint {t.key}={t.value}:{t.effect}"
    return ""


@dataclass
class Placer:
    facts: ClusterFacts
    graph: CompatibilityGraph
    ctx: Context
    capacity: Capacity
    _pools: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    _heaps: dict[tuple[str, str, str], list[tuple[int, str]]] = field(default_factory=dict)
    excluded: dict[tuple[str, str, str], Counter[str]] = field(default_factory=dict)

    def pool(self, src: str, policy: str, accepts: Callable[[NodeFacts], bool],
             draining: frozenset[str], placement: str) -> list[str]:
        """Candidate destinations shared by every pod of one source class and policy."""
        key = (self.graph.class_of[src], policy, placement)
        if key not in self._pools:
            nodes = self.facts.node_by_name
            cands = []
            out: Counter[str] = Counter()
            for cid in self.graph.destination_classes(src):
                for d in self.graph.members[cid]:
                    if d in draining:
                        out["being drained"] += 1
                    elif nodes[d].unschedulable:
                        out["cordoned"] += 1
                    elif not accepts(nodes[d]):
                        out["outside the policy's destinations"] += 1
                    else:
                        cands.append(d)
            self.excluded[key] = out
            # Fullest first for binpack; stable tie-break by name for determinism.
            cands.sort(key=lambda d: (self.capacity.mem[d], d))
            self._pools[key] = cands
            if placement == "spread":
                self._heaps[key] = [(-self.capacity.mem[d], d) for d in cands]
                heapq.heapify(self._heaps[key])
        return self._pools[key]

    def _ok(self, pod: PodFacts, src: NodeFacts, dst: str, why: Counter[str]) -> bool:
        if dst == src.name:
            return False
        node = self.facts.node_by_name[dst]
        reason = self.capacity.fits(pod, dst) or scheduling_mismatch(pod, node)
        if not reason:
            bad = [v for v in pod_node_verdicts(pod, src, node, self.ctx) if v.blocks]
            reason = f"{bad[0].code} {bad[0].message.split(';')[-1].strip()}" if bad else ""
        if reason:
            why[reason.split(" (")[0] if reason.startswith("ST") else reason] += 1
            return False
        return True

    def place(self, pod: PodFacts, policy: str, accepts: Callable[[NodeFacts], bool],
              draining: frozenset[str], placement: str) -> tuple[str, Counter[str]]:
        src = self.facts.node_by_name[pod.node]
        cands = self.pool(pod.node, policy, accepts, draining, placement)
        cid = self.graph.class_of[pod.node]
        why: Counter[str] = Counter(self.excluded[(cid, policy, placement)])
        if pod.node in draining and cid in self.graph.destination_classes(pod.node):
            why["being drained"] -= 1  # the pod's own node is not a candidate anyway
        why = +why  # drop zero counts
        if placement == "spread":
            return self._place_spread(pod, src, (self.graph.class_of[pod.node], policy,
                                                 placement), why), why
        for d in cands:
            if self._ok(pod, src, d, why):
                self.capacity.take(pod, d)
                return d, why
        return "", why

    def _place_spread(self, pod: PodFacts, src: NodeFacts, key: tuple[str, str, str],
                      why: Counter[str]) -> str:
        heap = self._heaps[key]
        skipped: list[tuple[int, str]] = []
        chosen = ""
        while heap:
            neg, d = heapq.heappop(heap)
            if -neg != self.capacity.mem[d]:  # stale entry: another pool used this node
                heapq.heappush(heap, (-self.capacity.mem[d], d))
                continue
            if self._ok(pod, src, d, why):
                self.capacity.take(pod, d)
                chosen = d
                heapq.heappush(heap, (-self.capacity.mem[d], d))
                break
            skipped.append((neg, d))
        for item in skipped:
            heapq.heappush(heap, item)
        return chosen
