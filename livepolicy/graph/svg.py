"""SVG picture of the compatibility graph, readable at a glance.

Nodes are drawn in boxes by zone and, inside a zone, by subnet (standard networking) or
in one "custom (ENIConfig)" group (custom networking). Each node is a small tile filled
with the colour of its compatibility class; nodes that node rules block are grey, hatched,
outlined in red and show their rule codes. The legend lists every class with its colour,
label, size and the classes it can send pods to, plus a small row -> column matrix of the
class graph. Cluster-level blockers are a red banner on top.

Above `SUMMARY_THRESHOLD` nodes, groups show one bar per class (node counts) instead of
tiles, so the picture stays bounded. Everything is plain string building: no fonts,
scripts or Graphviz; the same graph always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from livepolicy.graph.compat import CompatibilityGraph
from livepolicy.graph.svg_draw import (
    CUSTOM_GROUP,
    GAP,
    LEGEND_MIN_H,
    MARGIN,
    RED,
    STYLE,
    SUMMARY_THRESHOLD,
    _Block,
    _esc,
    _plural,
    _text_w,
    _wrap,
)
from livepolicy.graph.svg_legend import _legend
from livepolicy.graph.svg_model import _Model
from livepolicy.graph.svg_zones import _zones_area

__all__ = ["CUSTOM_GROUP", "SUMMARY_THRESHOLD", "to_svg"]


# ------------------------------------------------------------------------ page

def _banner(m: _Model, width: int) -> _Block:
    lines: list[tuple[str, str]] = [
        ("Cluster blocked: no node can take part in a live migration", "h2 ban")]
    for v in m.graph.cluster_blockers:
        for i, line in enumerate(_wrap(f"{v.code}  {v.message}", width - 28, 12, 3)):
            lines.append(((" " * 7 if i else "") + line, "ban"))
    b = _Block(width, 16 + 18 * len(lines))
    b.rect(0, 0, width, b.h, RED, rx=8)
    for i, (text, cls) in enumerate(lines):
        b.text(14, 24 + i * 18, text, cls)
    return b


def _subtitle(m: _Model) -> list[str]:
    g = m.graph
    usable = len(g.class_of)
    out = [f"{_plural(len(m.nodes), 'node')} in {_plural(len(m.zones), 'zone')} \u00b7 "
           f"{_plural(len(g.classes), 'class')} \u00b7 {usable} usable \u00b7 "
           f"{len(m.nodes) - usable} blocked \u00b7 "
           f"{_plural(g.class_graph.number_of_edges(), 'class edge')}"]
    if m.summary:
        out.append(f"More than {SUMMARY_THRESHOLD} nodes: each subnet group shows node counts "
                   "per class instead of individual nodes.")
    return out


def to_svg(graph: CompatibilityGraph) -> str:
    """A self-contained SVG document of the graph (deterministic; ASCII-only output)."""
    m = _Model(graph)
    area = _zones_area(m)
    legend = _legend(m, max(area.h, LEGEND_MIN_H))
    name = graph.ctx.facts.info.name
    title = "Live-migration compatibility" + (f" \u2013 {name}" if name else "")
    subtitle = _subtitle(m)
    content_w = area.w + 3 * GAP + legend.w
    width = 2 * MARGIN + max(content_w, _text_w(title, 20, bold=True),
                             *(_text_w(s, 12) for s in subtitle))
    page = _Block(width, 0)
    page.text(MARGIN, MARGIN + 18, title, "h1")
    y = MARGIN + 40
    for s in subtitle:
        page.text(MARGIN, y, s, "dim")
        y += 17
    y += 8
    if m.cluster_blocked:
        banner = _banner(m, width - 2 * MARGIN)
        page.place(banner, MARGIN, y)
        y += banner.h + 14
    page.place(area, MARGIN, y)
    page.place(legend, width - MARGIN - legend.w, y)
    height = y + max(area.h, legend.h) + MARGIN
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img">')
    defs = ("<defs><style>" + STYLE + "</style>"
            '<pattern id="lp-hatch" width="7" height="7" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="7" height="7" fill="#E4E6E8"/>'
            '<line x1="0" y1="0" x2="0" y2="7" stroke="#C9CDD1" stroke-width="3"/></pattern>'
            "</defs>")
    body: Sequence[str] = page.parts
    return "\n".join([head, f"<title>{_esc(title)}</title>", defs,
                      f'<rect width="{width}" height="{height}" fill="#FFFFFF"/>', *body,
                      "</svg>"]) + "\n"
