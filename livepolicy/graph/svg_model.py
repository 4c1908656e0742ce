"""What the SVG picture shows, before any coordinates: nodes grouped by zone and subnet,
a colour and a short name per class and node, the keys that tell same-label classes apart.

Computed once and shared by the zones area and the legend, so both agree on colours/order.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from livepolicy.facts.model import NodeFacts
from livepolicy.graph.compat import CompatibilityGraph, NodeClass
from livepolicy.graph.svg_draw import (
    CUSTOM_GROUP,
    PALETTE,
    SUMMARY_THRESHOLD,
    _differences,
    _natural,
)
from livepolicy.rules.registry import PAIR_RULES

_IPV4 = re.compile(r"^\d+\.\d+\.\d+\.\d+$")

# ------------------------------------------------------------------------ model

@dataclass
class _Group:
    title: str
    nodes: list[NodeFacts]


@dataclass
class _Zone:
    title: str
    groups: list[_Group]

    @property
    def size(self) -> int:
        return sum(len(g.nodes) for g in self.groups)


class _Model:
    def __init__(self, graph: CompatibilityGraph) -> None:
        self.graph = graph
        facts = graph.ctx.facts
        self.nodes = sorted(facts.nodes, key=lambda n: n.name)
        self.index = {c.id: i for i, c in enumerate(graph.classes)}
        self.palette = self._colours()
        self.summary = len(self.nodes) > SUMMARY_THRESHOLD
        self.cluster_blocked = bool(graph.cluster_blockers)
        self.cidr = {s.id: s.cidr for s in facts.info.subnets if s.cidr}
        self.zones = self._zones()
        firsts = Counter(n.name.split(".", 1)[0] for n in self.nodes)
        self.short = {n.name: self._short(n.name, firsts) for n in self.nodes}
        self.detail = self._details()

    def _details(self) -> dict[str, str]:
        """For classes sharing a label, the pair-rule keys that tell them apart."""
        by_label: dict[str, list[NodeClass]] = {}
        for c in self.graph.classes:
            by_label.setdefault(c.label, []).append(c)
        out: dict[str, str] = {}
        for same in by_label.values():
            if len(same) < 2:
                continue
            parts: list[list[str]] = [[] for _ in same]
            for i in range(min(len(c.key) for c in same)):
                texts = _differences([c.key[i] for c in same])
                if len(set(texts)) > 1:
                    rule = PAIR_RULES[i].name if i < len(PAIR_RULES) else f"key {i}"
                    for k, text in enumerate(texts):
                        parts[k].append(f"{rule}: {text}")
            for k, c in enumerate(same):
                out[c.id] = "; ".join(parts[k])
        return out

    @staticmethod
    def _short(name: str, firsts: Counter[str]) -> str:
        """Drop the DNS domain (ip-10-0-1-2.ec2.internal) when the host part is unique."""
        host = name.split(".", 1)[0]
        if host and host != name and firsts[host] == 1 and not _IPV4.match(name):
            return host
        return name

    def colour(self, cid: str) -> tuple[str, str]:
        return PALETTE[self.palette[cid]]

    def _colours(self) -> dict[str, int]:
        """Palette index per class: class order while the palette lasts; beyond that, the
        colour least used by classes sharing a zone with it (then least used overall)."""
        classes = self.graph.classes
        if len(classes) <= len(PALETTE):
            return {c.id: i for i, c in enumerate(classes)}
        zone_of = {n.name: n.zone for n in self.nodes}
        in_zone: dict[str, set[str]] = {}
        for c in classes:
            for member in c.members:
                in_zone.setdefault(zone_of.get(member, ""), set()).add(c.id)
        out: dict[str, int] = {}
        used: Counter[int] = Counter()
        for c in classes:
            zones = {zone_of.get(member, "") for member in c.members}
            near = Counter(out[o] for z in sorted(zones) for o in in_zone[z] if o in out)
            pick = min(range(len(PALETTE)), key=lambda i: (near[i], used[i], i))
            out[c.id] = pick
            used[pick] += 1
        return out

    def codes(self, node: str) -> list[str]:
        codes = sorted({v.code for v in self.graph.node_blockers(node)})
        return codes or (["cluster"] if node not in self.graph.class_of else [])

    def _order(self, node: NodeFacts) -> tuple[int, tuple[tuple[int, int, str], ...], str]:
        cid = self.graph.class_of.get(node.name)
        return (self.index[cid] if cid is not None else len(self.index), _natural(node.name),
                node.name)

    def _zones(self) -> list[_Zone]:
        label = self.graph.ctx.settings.labels.subnet_id
        by_zone: dict[str, dict[tuple[int, str], list[NodeFacts]]] = {}
        for n in self.nodes:
            if n.network_mode == "custom":
                key = (2, CUSTOM_GROUP)
            elif n.labels.get(label):
                key = (0, n.labels[label])
            else:
                key = (1, "no subnet label")
            by_zone.setdefault(n.zone, {}).setdefault(key, []).append(n)
        zones = []
        for zone in sorted(by_zone, key=lambda z: (z == "", z)):
            groups = []
            for (kind, name), nodes in sorted(by_zone[zone].items()):
                title = f"{name} ({self.cidr[name]})" if kind == 0 and name in self.cidr \
                    else name
                groups.append(_Group(title, sorted(nodes, key=self._order)))
            zones.append(_Zone(f"zone {zone}" if zone else "zone unknown", groups))
        return zones


def _id_runs(m: _Model, ids: Iterable[str]) -> list[str]:
    """Class ids in order, consecutive runs collapsed: c01, c03-c06."""
    order = sorted(ids, key=lambda c: m.index[c])
    out: list[list[str]] = []
    for c in order:
        if out and m.index[c] == m.index[out[-1][-1]] + 1:
            out[-1].append(c)
        else:
            out.append([c])
    # A run of two is both ids (c01, c02), not a range: it used to print only the first.
    return [item for r in out for item in (r if len(r) < 3 else [f"{r[0]}\u2013{r[-1]}"])]
