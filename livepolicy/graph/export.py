"""Exports of the compatibility graph: JSON (data) and Graphviz DOT (for tools)."""

from __future__ import annotations

from typing import Any

from livepolicy.graph.compat import CompatibilityGraph


def to_json(graph: CompatibilityGraph) -> dict[str, Any]:
    facts = graph.ctx.facts
    return {
        "classes": [{"id": c.id, "label": c.label, "members": list(c.members),
                     "destinations": sorted(graph.class_graph.successors(c.id))}
                    for c in graph.classes],
        "nodes": [{"name": n.name, "class": graph.class_of.get(n.name), "zone": n.zone,
                   "architecture": n.architecture, "instance_type": n.instance_type,
                   "blocked": [v.code for v in graph.node_blockers(n.name)]}
                  for n in facts.nodes],
        "cluster_blocked": [v.code for v in graph.cluster_blockers],
        "class_edges": [list(e) for e in sorted(graph.class_graph.edges)],
    }


def _q(s: str) -> str:
    return '"' + s.replace('"', '\\"') + '"'


def to_dot(graph: CompatibilityGraph) -> str:
    """Class-level DOT: one box per class listing its nodes; blocked nodes in their own box."""
    lines = ["digraph livepolicy {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    for c in graph.classes:
        members = "\\n".join(c.members[:8]) + (f"\\n(+{len(c.members) - 8} more)"
                                               if len(c.members) > 8 else "")
        label = _q(c.id + ": " + c.label + "\\n" + members)
        lines.append(f"  {c.id} [label={label}];")
    blocked = [n.name for n in graph.ctx.facts.nodes if n.name not in graph.class_of]
    if blocked:
        label = _q("blocked:\\n" + "\\n".join(blocked))
        lines.append(f"  blocked [label={label}, color=red, fontcolor=red];")
    for a, b in sorted(graph.class_graph.edges):
        lines.append(f"  {a} -> {b};")
    lines.append("}")
    return "\n".join(lines) + "\n"
