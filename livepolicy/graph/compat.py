"""Build the directed compatibility graph by classes of interchangeable nodes.

Testing 5,000 x 5,000 node pairs is 25 million rule runs. Instead, every pair rule names
the node attributes it reads (`PairRule.key`); nodes with equal keys are interchangeable,
so they form one class. Pair rules run once per pair of classes (typically a few dozen
classes), and the node-level graph is the class graph expanded on demand.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from functools import cached_property

import networkx as nx

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, Verdict
from livepolicy.rules.pair_generation import node_generation_set
from livepolicy.rules.registry import PAIR_RULES, cluster_verdicts, node_verdicts, pair_verdicts


@dataclass(frozen=True)
class NodeClass:
    id: str
    key: tuple[Hashable, ...]
    members: tuple[str, ...]
    label: str  # short human description (region/arch/generation/network)


@dataclass(frozen=True)
class CompatibilityGraph:
    classes: tuple[NodeClass, ...]
    class_graph: nx.DiGraph  # class id -> class id; a self-loop means members exchange pods
    class_of: dict[str, str]
    node_verdicts: dict[str, tuple[Verdict, ...]]
    cluster_verdicts: tuple[Verdict, ...]
    ctx: Context

    @cached_property
    def members(self) -> dict[str, tuple[str, ...]]:
        return {c.id: c.members for c in self.classes}

    def node_blockers(self, node: str) -> list[Verdict]:
        return [v for v in self.node_verdicts.get(node, ()) if v.blocks]

    @property
    def cluster_blockers(self) -> list[Verdict]:
        return [v for v in self.cluster_verdicts if v.blocks]

    def usable(self, node: str) -> bool:
        return node in self.class_of

    def has_edge(self, src: str, dst: str) -> bool:
        if src == dst or src not in self.class_of or dst not in self.class_of:
            return False
        return bool(self.class_graph.has_edge(self.class_of[src], self.class_of[dst]))

    def destination_classes(self, src: str) -> list[str]:
        cid = self.class_of.get(src)
        if cid is None:
            return []
        return sorted(self.class_graph.successors(cid))

    def destinations(self, src: str) -> Iterator[str]:
        for cid in self.destination_classes(src):
            for m in self.members[cid]:
                if m != src:
                    yield m

    @cached_property
    def _zone_reps(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """Per class, up to two members per zone (two, so one remains when the pod's own
        node is one of them)."""
        nodes = self.ctx.facts.node_by_name
        out: dict[str, dict[str, tuple[str, ...]]] = {}
        for c in self.classes:
            zones: dict[str, list[str]] = {}
            for m in c.members:
                reps = zones.setdefault(nodes[m].zone, [])
                if len(reps) < 2:
                    reps.append(m)
            out[c.id] = {z: tuple(r) for z, r in zones.items()}
        return out

    def members_in_zone(self, cid: str, zone: str) -> tuple[str, ...]:
        """Up to two members of class `cid` in `zone`."""
        return self._zone_reps[cid].get(zone, ())

    def zone_representatives(self, src: str) -> Iterator[str]:
        """One destination of `src` per (destination class, zone)."""
        for cid in self.destination_classes(src):
            for reps in self._zone_reps[cid].values():
                rep = next((r for r in reps if r != src), None)
                if rep is not None:
                    yield rep

    @cached_property
    def _class_reach(self) -> dict[str, tuple[int, bool]]:
        """Per class: nodes reachable through its edges, and whether it reaches itself."""
        return {c.id: (sum(len(self.members[d]) for d in self.class_graph.successors(c.id)),
                       bool(self.class_graph.has_edge(c.id, c.id))) for c in self.classes}

    def out_degree(self, src: str) -> int:
        cid = self.class_of.get(src)
        if cid is None:
            return 0
        n, to_self = self._class_reach[cid]
        return n - 1 if to_self else n

    def node_graph(self) -> nx.DiGraph:
        """Expand to a node-level DiGraph (for exports and tests; O(edges))."""
        g = nx.DiGraph()
        for n, verdicts in self.node_verdicts.items():
            g.add_node(n, cls=self.class_of.get(n, ""),
                       blocked=[v.code for v in verdicts if v.blocks])
        for a, b in self.class_graph.edges:
            for s in self.members[a]:
                g.add_edges_from((s, d) for d in self.members[b] if d != s)
        return g


def _label(node: NodeFacts, ctx: Context) -> str:
    net = node.labels.get(ctx.settings.labels.subnet_id, "") \
        if node.network_mode == "standard" else f"custom/{node.zone}"
    # The settings-aware generation set, as rule PR003 sees it (overrides included).
    gen = node_generation_set(node, ctx) or "?"
    return f"{node.region or '?'} {node.architecture or '?'} {gen} " \
           f"{net or '?'}"


def build_graph(ctx: Context) -> CompatibilityGraph:
    """Group usable nodes into classes and connect classes whose pair rules all pass."""
    cluster = tuple(cluster_verdicts(ctx))
    cluster_ok = not any(v.blocks for v in cluster)
    verdicts: dict[str, tuple[Verdict, ...]] = {}
    groups: dict[tuple[Hashable, ...], list[NodeFacts]] = {}
    for node in ctx.facts.nodes:
        vs = tuple(node_verdicts(node, ctx))
        verdicts[node.name] = vs
        if cluster_ok and not any(v.blocks for v in vs):
            key = tuple(r.key(node, ctx) for r in PAIR_RULES)
            groups.setdefault(key, []).append(node)
    ordered = sorted(groups.items(), key=lambda kv: kv[1][0].name)
    classes = []
    class_of: dict[str, str] = {}
    reps: dict[str, NodeFacts] = {}
    for i, (key, nodes) in enumerate(ordered):
        cid = f"c{i + 1:02d}"
        classes.append(NodeClass(cid, key, tuple(n.name for n in nodes), _label(nodes[0], ctx)))
        reps[cid] = nodes[0]
        for n in nodes:
            class_of[n.name] = cid
    g = nx.DiGraph()
    for c in classes:
        g.add_node(c.id, size=len(c.members), label=c.label)
    for a in classes:
        for b in classes:
            if a.id == b.id and len(a.members) < 2:
                continue
            if all(v.ok for v in pair_verdicts(reps[a.id], reps[b.id], ctx)):
                g.add_edge(a.id, b.id)
    return CompatibilityGraph(tuple(classes), g, class_of, verdicts, cluster, ctx)
