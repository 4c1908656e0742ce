"""Which pods each policy claims, from which source nodes, towards which destinations.

A pod is claimed by the highest-priority policy (ties: name) whose workload selector
matches it and whose source selector matches its node, so overlapping policies never
plan the same pod twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from livepolicy.core.quantity import parse_duration_ms
from livepolicy.core.selectors import Selector
from livepolicy.facts.model import ClusterFacts, NodeFacts, PodFacts
from livepolicy.policy.load import PolicySet
from livepolicy.policy.models import MigrationPolicy, NodeTemplate


def template_matches(tpl: NodeTemplate, node: NodeFacts) -> bool:
    return tpl.spec.node_selector.compile().matches(node.labels)


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class CompiledPolicy:
    policy: MigrationPolicy
    workload_selector: Selector
    source_selector: Selector
    dest_selector: Selector
    source_templates: tuple[NodeTemplate, ...]
    dest_templates: tuple[NodeTemplate, ...]

    @property
    def name(self) -> str:
        return self.policy.metadata.name

    def selects_source(self, node: NodeFacts, now: datetime) -> bool:
        src = self.policy.spec.sources  # never empty: validation refuses that (policy/load.py)
        if src.names and node.name not in src.names:
            return False
        if self.source_templates and not any(template_matches(t, node)
                                             for t in self.source_templates):
            return False
        if not self.source_selector.matches(node.labels):
            return False
        if src.cordoned is not None and node.unschedulable != src.cordoned:
            return False
        if src.older_than:
            created = _parse_time(node.created)
            age = timedelta(milliseconds=parse_duration_ms(src.older_than))
            if created is None or now - created < age:
                return False
        return True

    def selects_workload(self, pod: PodFacts) -> bool:
        w = self.policy.spec.workloads
        if w.namespaces and pod.namespace not in w.namespaces:
            return False
        if pod.namespace in w.exclude_namespaces:
            return False
        if w.owner_kinds and pod.owner_kind.value not in w.owner_kinds:
            return False
        return self.workload_selector.matches(pod.labels)

    def accepts_destination(self, node: NodeFacts) -> bool:
        if self.dest_templates and not any(template_matches(t, node)
                                           for t in self.dest_templates):
            return False
        return self.dest_selector.matches(node.labels)


def compile_policies(ps: PolicySet) -> list[CompiledPolicy]:
    out = []
    for pol in ps.ordered_policies():
        s = pol.spec
        out.append(CompiledPolicy(
            pol, s.workloads.selector.compile(), s.sources.selector.compile(),
            s.destinations.selector.compile(),
            tuple(ps.templates[t] for t in s.sources.templates if t in ps.templates),
            tuple(ps.templates[t] for t in s.destinations.templates if t in ps.templates)))
    return out


@dataclass(frozen=True)
class Selection:
    claimed: dict[str, CompiledPolicy]  # pod key -> policy that claims it
    sources: dict[str, frozenset[str]]  # policy name -> its source nodes
    draining: frozenset[str]  # every node some policy drains: never a destination


def select(facts: ClusterFacts, policies: list[CompiledPolicy], now: datetime) -> Selection:
    sources = {p.name: frozenset(n.name for n in facts.nodes if p.selects_source(n, now))
               for p in policies}
    claimed: dict[str, CompiledPolicy] = {}
    for node, pods in facts.pods_by_node.items():
        owners = [p for p in policies if node in sources[p.name]]
        if not owners:
            continue
        for pod in pods:
            for p in owners:  # already in priority order
                if p.selects_workload(pod):
                    claimed[pod.key] = p
                    break
    draining = frozenset().union(*sources.values()) if sources else frozenset()
    return Selection(claimed, sources, draining)
