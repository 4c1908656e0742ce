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

import math
import re
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from livepolicy.facts.model import NodeFacts
from livepolicy.graph.compat import CompatibilityGraph, NodeClass
from livepolicy.rules.registry import PAIR_RULES, rule_by_code

SUMMARY_THRESHOLD = 400  # above this many nodes, groups show per-class bars, not tiles
CUSTOM_GROUP = "custom (ENIConfig)"

# Paul Tol's colour-blind-safe schemes: "light" (dark text) first, then the "muted"
# colours that stay distinct from them. Pairs are (fill, text colour).
PALETTE: tuple[tuple[str, str], ...] = (
    ("#77AADD", "#111111"), ("#EE8866", "#111111"), ("#EEDD88", "#111111"),
    ("#FFAABB", "#111111"), ("#99DDFF", "#111111"), ("#44BB99", "#111111"),
    ("#BBCC33", "#111111"), ("#AAAA00", "#111111"), ("#332288", "#FFFFFF"),
    ("#117733", "#FFFFFF"), ("#882255", "#FFFFFF"), ("#AA4499", "#FFFFFF"),
    ("#CC6677", "#111111"),
)
RED = "#C62828"
SOFT = "soft"  # a faint dark outline (stroke-opacity, not #RRGGBBAA, for old renderers)
BLOCKED_TEXT = "#333333"

MARGIN = 20
GAP = 8  # between tiles
TILE_W, TILE_H = 172, 38
ZPAD, ZTITLE_H = 12, 32  # zone box padding and title band
GPAD, GTITLE_H = 8, 22  # subnet group padding and title band
MIN_COLS, MAX_COLS = 3, 8  # tile columns per subnet group
MAX_AREA_W = 3200  # zone boxes never make the drawing wider than this
ASPECT = 1.6  # zones are arranged to make the page about this wide per unit of height
LEGEND_W = 450
LEGEND_MIN_H = 1000  # the legend flows into another column only beyond this
LEGEND_MAX_COLS = 3
SUM_ZONE_W = 400  # zone box width in summary mode
SUM_ROW_H = 17
SUM_MAX_ROWS = 12  # bars per group in summary mode before "other classes"
MATRIX_MAX = 26  # draw the class matrix up to this many classes
CELL = 14

STYLE = (
    "text{font-family:'DejaVu Sans',Verdana,Arial,Helvetica,sans-serif;font-size:12px;"
    "fill:#222222}"
    ".m{font-family:'DejaVu Sans Mono',Menlo,Consolas,'Liberation Mono',monospace}"
    ".h1{font-size:20px;font-weight:bold}"
    ".h2{font-size:14px;font-weight:bold}"
    ".h3{font-size:12px;font-weight:bold;fill:#333333}"
    ".dim{fill:#5F6B76}"
    ".sm{font-size:11px}"
    ".xs{font-size:10px}"
    ".b{font-weight:bold}"
    ".red{fill:" + RED + ";font-weight:bold}"
    ".ban{fill:#FFFFFF}"
)

_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_IPV4 = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


# ------------------------------------------------------------------------ text helpers

def _clean(s: str) -> str:
    return _BAD_XML.sub("?", s)


def _esc(s: str) -> str:
    """Escaped text content, ASCII only (non-ASCII as character references)."""
    return escape(_clean(s)).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _attr(s: str) -> str:
    """A quoted, escaped attribute value, ASCII only."""
    return quoteattr(_clean(s)).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _char_w(size: int, mono: bool = False, bold: bool = False) -> float:
    """Conservative average advance of one character (DejaVu is among the widest fonts)."""
    if mono:
        return size * 0.61
    return size * (0.64 if bold else 0.58)


def _text_w(s: str, size: int, mono: bool = False, bold: bool = False) -> int:
    return math.ceil(len(s) * _char_w(size, mono, bold))


def _fit(s: str, width: int, size: int, mono: bool = False, bold: bool = False) -> str:
    """Truncate in the middle (keeps the distinctive head and tail) to fit `width` px."""
    n = max(3, int(width / _char_w(size, mono, bold)))
    if len(s) <= n:
        return s
    tail = max(1, (n - 1) // 3)
    return s[:n - 1 - tail] + "\u2026" + s[len(s) - tail:]


def _fit_end(s: str, width: int, size: int, mono: bool = False, bold: bool = False) -> str:
    n = max(2, int(width / _char_w(size, mono, bold)))
    return s if len(s) <= n else s[:n - 1] + "\u2026"


def _wrap(s: str, width: int, size: int, max_lines: int = 4, mono: bool = False) -> list[str]:
    n = max(8, int(width / _char_w(size, mono)))
    lines = textwrap.wrap(s, n, break_on_hyphens=False) or [""]
    if len(lines) > max_lines:
        lines = [*lines[:max_lines - 1], _fit_end(" ".join(lines[max_lines - 1:]), width, size,
                                                  mono)]
    return lines


def _natural(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that puts ip-10-0-9-1 before ip-10-0-10-1."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"(\d+)", name) if p)


def _key_text(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, frozenset | set):
        return ", ".join(sorted(str(x) for x in v)) or "none"
    if isinstance(v, tuple):
        return "/".join(_key_text(x) for x in v)
    return str(v) or "?"


def _differences(values: Sequence[object]) -> list[str]:
    """Per value, the text of its parts that differ from the others (tuples by position)."""
    tuples = [v for v in values if isinstance(v, tuple)]
    if len(tuples) == len(values) and len({len(t) for t in tuples}) == 1:
        cols = [_differences([t[i] for t in tuples]) for i in range(len(tuples[0]))
                if len({_key_text(t[i]) for t in tuples}) > 1]
        return ["/".join(col[k] for col in cols) for k in range(len(tuples))]
    return [_key_text(v) for v in values]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


# ------------------------------------------------------------------------ drawing

@dataclass
class _Block:
    """A laid-out piece of the picture, drawn with its top-left corner at (0, 0)."""

    w: int
    h: int
    parts: list[str] = field(default_factory=list)

    def add(self, s: str) -> None:
        self.parts.append(s)

    def place(self, child: _Block, x: int, y: int) -> None:
        self.parts.append(f'<g transform="translate({x},{y})">')
        self.parts.extend(child.parts)
        self.parts.append("</g>")

    def rect(self, x: int, y: int, w: int, h: int, fill: str, stroke: str = "none",
             rx: int = 0, sw: float = 1, dash: str = "") -> None:
        extra = f' rx="{rx}"' if rx else ""
        if stroke == SOFT:
            extra += f' stroke="#000000" stroke-opacity="0.25" stroke-width="{sw:g}"'
        elif stroke != "none":
            extra += f' stroke="{stroke}" stroke-width="{sw:g}"'
        if dash:
            extra += f' stroke-dasharray="{dash}"'
        self.parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{fill}"'
                          f"{extra}/>")

    def text(self, x: int, y: int, s: str, cls: str = "", anchor: str = "",
             fill: str = "") -> None:
        extra = f' class="{cls}"' if cls else ""
        if anchor:
            extra += f' text-anchor="{anchor}"'
        if fill:
            extra += f' style="fill:{fill}"'
        self.parts.append(f'<text x="{x}" y="{y}"{extra}>{_esc(s)}</text>')

    def line(self, x1: int, y1: int, x2: int, y2: int, stroke: str, sw: float = 1) -> None:
        self.parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{stroke}" '
                          f'stroke-width="{sw:g}"/>')

    def cross(self, x: int, y: int, size: int) -> None:
        self.line(x, y, x + size, y + size, RED, 2)
        self.line(x + size, y, x, y + size, RED, 2)


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


# ------------------------------------------------------------------------ node tiles

def _tile(m: _Model, node: NodeFacts) -> _Block:
    b = _Block(TILE_W, TILE_H)
    cid = m.graph.class_of.get(node.name)
    itype = node.instance_type or "?"
    if cid is not None:
        c = m.graph.classes[m.index[cid]]
        tip = f"{node.name}\n{itype} {node.architecture}\nclass {cid}: {c.label}"
    else:
        why = [f"{v.code}: {v.message}" for v in m.graph.node_blockers(node.name)] or \
              [f"{v.code}: {v.message}" for v in m.graph.cluster_blockers]
        tip = "\n".join([f"{node.name}", f"{itype} {node.architecture}", "blocked:", *why])
    b.add(f"<g><title>{_esc(tip)}</title>")
    inner = TILE_W - 14
    if cid is not None:
        fill, ink = m.colour(cid)
        b.rect(0, 0, TILE_W, TILE_H, fill, SOFT, rx=6)
        b.text(7, 15, _fit(m.short[node.name], inner, 11, mono=True), "m sm b", fill=ink)
        b.text(TILE_W - 7, 31, cid, "m xs b", anchor="end", fill=ink)
        b.text(7, 31, _fit_end(itype, inner - 30, 10, mono=True), "m xs", fill=ink)
    else:
        b.rect(0, 0, TILE_W, TILE_H, "url(#lp-hatch)", RED, rx=6, sw=1.5, dash="5 3")
        b.cross(TILE_W - 15, 6, 8)
        b.text(7, 15, _fit(m.short[node.name], inner - 12, 11, mono=True), "m sm b",
               fill=BLOCKED_TEXT)
        codes = m.codes(node.name)
        shown = " ".join(codes)
        room = inner - min(_text_w(itype, 10, mono=True), inner // 2) - 8
        if _text_w(shown, 10, mono=True) > room:
            shown = f"{codes[0]} +{len(codes) - 1}"
        b.text(TILE_W - 7, 31, shown, "m xs red", anchor="end")
        b.text(7, 31, _fit_end(itype, inner - _text_w(shown, 10, mono=True) - 8, 10, mono=True),
               "m xs", fill=BLOCKED_TEXT)
    b.add("</g>")
    return b


def _zone_inner_w(zone: _Zone, cols: int) -> int:
    grid_w = cols * TILE_W + (cols - 1) * GAP
    titles = [_text_w(f"{g.title} - {len(g.nodes)} nodes", 12, bold=True) for g in zone.groups]
    return max([grid_w + 2 * GPAD, _text_w(zone.title + " 000 nodes", 14, bold=True) + GPAD,
                *(t + 2 * GPAD for t in titles)])


def _group_h(g: _Group, cols: int) -> int:
    return GTITLE_H + math.ceil(len(g.nodes) / cols) * (TILE_H + GAP) - GAP + GPAD


def _zone_size(zone: _Zone, cols: int) -> tuple[int, int]:
    return (_zone_inner_w(zone, cols) + 2 * ZPAD,
            ZTITLE_H + sum(_group_h(g, cols) + GAP for g in zone.groups) - GAP + ZPAD)


def _zone_nodes(m: _Model, zone: _Zone, cols: int) -> _Block:
    inner_w = _zone_inner_w(zone, cols)
    b = _Block(*_zone_size(zone, cols))
    y = ZTITLE_H
    for g in zone.groups:
        gh = _group_h(g, cols)
        b.rect(ZPAD, y, inner_w, gh, "#FFFFFF", "#C5CDD5", rx=6)
        b.text(ZPAD + GPAD, y + 16, f"{g.title} \u2013 {_plural(len(g.nodes), 'node')}", "h3")
        for i, n in enumerate(g.nodes):
            r, c = divmod(i, cols)
            b.place(_tile(m, n), ZPAD + GPAD + c * (TILE_W + GAP),
                    y + GTITLE_H + r * (TILE_H + GAP))
        y += gh + GAP
    return b


def _arrange(sizes: Sequence[tuple[int, int]], per_row: int) -> tuple[int, int]:
    """Width and height of zone boxes laid out `per_row` to a row."""
    w = h = 0
    for i in range(0, len(sizes), per_row):
        row = sizes[i:i + per_row]
        w = max(w, sum(bw for bw, _ in row) + 2 * GAP * (len(row) - 1))
        h += max(bh for _, bh in row) + 2 * GAP
    return w, h - 2 * GAP


def _per_row(sizes: Sequence[tuple[int, int]]) -> tuple[float, int]:
    """(score, zones per row) closest to the target aspect; lower scores are better."""
    best = (math.inf, 1)
    for per_row in range(1, len(sizes) + 1):
        w, h = _arrange(sizes, per_row)
        if per_row > 1 and w > MAX_AREA_W:
            break
        score = abs(math.log((w + LEGEND_W + 3 * GAP) / max(h, 400) / ASPECT))
        if score < best[0] - 1e-9:
            best = (score, per_row)
    return best


def _best_layout(m: _Model) -> tuple[int, int]:
    """(tile columns, zones per row) giving a page closest to the target aspect."""
    biggest = max(len(g.nodes) for z in m.zones for g in z.groups)
    best = (math.inf, 1, 1)
    for cols in range(min(biggest, MIN_COLS), min(biggest, MAX_COLS) + 1):
        score, per_row = _per_row([_zone_size(z, cols) for z in m.zones])
        if score < best[0] - 1e-9:
            best = (score, cols, per_row)
    return best[1], best[2]


# ------------------------------------------------------------------------ summary bars

def _group_rows(m: _Model, g: _Group) -> list[tuple[str, int, str, str]]:
    """(label, count, fill, tooltip) per class present in the group, blocked last."""
    counts = Counter(m.graph.class_of.get(n.name, "") for n in g.nodes)
    classes = sorted((c for c in counts if c), key=lambda c: m.index[c])
    rest: list[str] = []
    if len(classes) > SUM_MAX_ROWS - 1:
        keep = set(sorted(classes, key=lambda c: (-counts[c], m.index[c]))[:SUM_MAX_ROWS - 2])
        rest = [c for c in classes if c not in keep]
        classes = [c for c in classes if c in keep]
    rows = [(c, counts[c], m.colour(c)[0], f"{c}: {m.graph.classes[m.index[c]].label}")
            for c in classes]
    if rest:
        rows.append((f"+{len(rest)} classes", sum(counts[c] for c in rest), "#8A96A3",
                     ", ".join(_id_runs(m, rest))))
    if counts[""]:
        codes = Counter(code for n in g.nodes for code in m.codes(n.name))
        rows.append(("blocked", counts[""], "url(#lp-hatch)", "blocked: " + ", ".join(
            f"{code} x{k}" for code, k in sorted(codes.items()))))
    return rows


def _zone_summary(m: _Model, zone: _Zone, scale: int) -> _Block:
    inner_w = SUM_ZONE_W - 2 * ZPAD
    b = _Block(SUM_ZONE_W, 0)
    label_w, count_w = 96, 52
    bar_max = inner_w - 2 * GPAD - label_w - count_w
    y = ZTITLE_H
    for g in zone.groups:
        rows = _group_rows(m, g)
        gh = GTITLE_H + len(rows) * SUM_ROW_H + GPAD
        b.rect(ZPAD, y, inner_w, gh, "#FFFFFF", "#C5CDD5", rx=6)
        title = f"{g.title} \u2013 {_plural(len(g.nodes), 'node')}"
        b.text(ZPAD + GPAD, y + 16, _fit(title, inner_w - 2 * GPAD, 12, bold=True), "h3")
        for i, (label, count, fill, tip) in enumerate(rows):
            ry = y + GTITLE_H + i * SUM_ROW_H
            blocked = label == "blocked"
            b.add(f"<g><title>{_esc(tip)} ({_plural(count, 'node')})</title>")
            b.text(ZPAD + GPAD, ry + 12, _fit_end(label, label_w - 6, 11, mono=True),
                   "m sm red" if blocked else "m sm b")
            bw = max(2, round(bar_max * count / scale))
            x0 = ZPAD + GPAD + label_w
            if blocked:
                b.rect(x0, ry + 2, bw, SUM_ROW_H - 4, fill, RED, rx=2, sw=1)
            else:
                b.rect(x0, ry + 2, bw, SUM_ROW_H - 4, fill, SOFT, rx=2)
            b.text(x0 + bw + 5, ry + 12, str(count), "m sm")
            b.add("</g>")
        y += gh + GAP
    b.h = y - GAP + ZPAD
    return b


# ------------------------------------------------------------------------ zones area

def _zones_area(m: _Model) -> _Block:
    if not m.zones:
        b = _Block(360, 40)
        b.text(0, 20, "no nodes in the snapshot", "h2 dim")
        return b
    if m.summary:
        scale = max(c for z in m.zones for g in z.groups for _, c, _, _ in _group_rows(m, g))
        blocks = [_zone_summary(m, z, scale) for z in m.zones]
        per_row = _per_row([(blk.w, blk.h) for blk in blocks])[1]
    else:
        cols, per_row = _best_layout(m)
        blocks = [_zone_nodes(m, z, cols) for z in m.zones]
    boxes = list(zip(m.zones, blocks, strict=True))
    rows = [boxes[i:i + per_row] for i in range(0, len(boxes), per_row)]
    area = _Block(0, 0)
    y = 0
    for row in rows:
        rh = max(blk.h for _, blk in row)
        x = 0
        for z, blk in row:
            area.rect(x, y, blk.w, rh, "#EEF2F6", "#8A96A3", rx=10, sw=1.5)
            area.text(x + ZPAD, y + 22, z.title, "h2")
            area.text(x + blk.w - ZPAD, y + 22, _plural(z.size, "node"), "sm dim", anchor="end")
            area.place(blk, x, y)
            x += blk.w + 2 * GAP
        area.w = max(area.w, x - 2 * GAP)
        y += rh + 2 * GAP
    area.h = y - 2 * GAP
    return area


# ------------------------------------------------------------------------ legend

def _id_runs(m: _Model, ids: Iterable[str]) -> list[str]:
    """Class ids in order, consecutive runs collapsed: c01, c03-c06."""
    order = sorted(ids, key=lambda c: m.index[c])
    out: list[list[str]] = []
    for c in order:
        if out and m.index[c] == m.index[out[-1][-1]] + 1:
            out[-1].append(c)
        else:
            out.append([c])
    return [r[0] if len(r) < 3 else f"{r[0]}\u2013{r[-1]}" for r in out]


def _destinations(m: _Model, cid: str) -> str:
    succ = [str(s) for s in m.graph.class_graph.successors(cid)]
    others = [s for s in succ if s != cid]
    parts = (["within class"] if cid in succ else []) + _id_runs(m, others)
    return "\u2192 " + (", ".join(parts) if parts else "no destination")


def _legend_class(m: _Model, cid: str) -> _Block:
    c = m.graph.classes[m.index[cid]]
    fill, _ = m.colour(cid)
    text_x, text_w = 30, LEGEND_W - 30
    count = _plural(len(c.members), "node")
    id_w = _text_w(cid, 12, mono=True, bold=True) + 8
    label = _wrap(c.label, text_w - id_w - _text_w(count, 11) - 10, 12, max_lines=2)
    b = _Block(LEGEND_W, 0)
    b.add(f"<g><title>{_esc(f'{cid}: {c.label}')}</title>")
    b.rect(0, 0, 22, 22, fill, SOFT, rx=4)
    b.text(text_x, 12, cid, "m b")
    b.text(LEGEND_W, 12, count, "sm dim", anchor="end")
    y = 12
    for i, line in enumerate(label):
        b.text(text_x + id_w, y, line)
        y += 15 if i < len(label) - 1 else 0
    if m.detail.get(cid):
        for line in _wrap(m.detail[cid], text_w, 11, max_lines=2):
            y += 14
            b.text(text_x, y, line, "sm dim")
    dest = _destinations(m, cid)
    for line in _wrap(dest, text_w, 11, max_lines=3):
        y += 14
        b.text(text_x, y, line, "sm dim" if dest.endswith("no destination") else "sm")
    b.add("</g>")
    b.h = max(y, 22) + 14
    return b


def _legend_blocked(m: _Model) -> _Block | None:
    blocked = [n for n in m.nodes if n.name not in m.graph.class_of]
    if not blocked:
        return None
    text_x = 30
    b = _Block(LEGEND_W, 0)
    b.rect(0, 0, 22, 22, "url(#lp-hatch)", RED, rx=4, sw=1.5, dash="4 2")
    b.cross(7, 7, 8)
    b.text(text_x, 12, "blocked (cannot send or receive)", "b", fill=RED)
    b.text(LEGEND_W, 12, _plural(len(blocked), "node"), "sm dim", anchor="end")
    codes = Counter(code for n in blocked for code in m.codes(n.name))
    code_w = max(_text_w(c, 11, mono=True) for c in codes) + 10
    y = 28
    for code in sorted(codes):
        rule = rule_by_code(code)
        name = rule.name if rule is not None else "cluster rules" if code == "cluster" else ""
        b.text(text_x, y, code, "m sm red")
        b.text(text_x + code_w, y, _fit_end(name, LEGEND_W - text_x - code_w - 50, 11), "sm")
        b.text(LEGEND_W, y, f"\u00d7{codes[code]}", "m sm dim", anchor="end")
        y += 15
    b.h = y + 4
    return b


def _legend(m: _Model, column_h: int) -> _Block:
    """Legend entries flowed into columns of about `column_h` (at most LEGEND_MAX_COLS)."""
    head = _Block(LEGEND_W, 44)
    head.text(0, 16, f"Compatibility classes ({len(m.graph.classes)})", "h2")
    head.text(0, 33, "\u2192 classes whose nodes can receive pods from this class", "xs dim")
    blocks = [head, *(_legend_class(m, c.id) for c in m.graph.classes)]
    if not m.graph.classes:
        none = _Block(LEGEND_W, 24)
        none.text(0, 12, "no usable nodes", "sm dim")
        blocks.append(none)
    blocked = _legend_blocked(m)
    if blocked is not None:
        blocks.append(blocked)
    if 2 <= len(m.graph.classes) <= MATRIX_MAX:
        blocks.append(_matrix(m))
    total = sum(blk.h for blk in blocks)
    column_h = max(column_h, math.ceil(total / LEGEND_MAX_COLS))
    out = _Block(0, 0)
    x = y = 0
    for blk in blocks:
        if y and y + blk.h > column_h:
            x, y = x + LEGEND_W + 3 * GAP, 0
        out.place(blk, x, y)
        y += blk.h
        out.w, out.h = x + LEGEND_W, max(out.h, y)
    return out


def _matrix(m: _Model) -> _Block:
    """Row class -> column class; a filled cell means pods can move that way."""
    ids = [c.id for c in m.graph.classes]
    b = _Block(LEGEND_W, 0)
    b.text(0, 24, "Class graph (row sends pods to column)", "h3")
    x0, y0 = 40, 62
    for j, cid in enumerate(ids):
        cx, tx = x0 + j * CELL, x0 + j * CELL + CELL // 2 + 3
        b.rect(cx + 2, y0 - 12, CELL - 4, 8, m.colour(cid)[0], SOFT)
        b.add(f'<text x="{tx}" y="{y0 - 16}" class="m xs" '
              f'transform="rotate(-90 {tx} {y0 - 16})">{_esc(cid)}</text>')
    for i, a in enumerate(ids):
        cy = y0 + i * CELL
        b.rect(0, cy + 2, 8, CELL - 4, m.colour(a)[0], SOFT)
        b.text(12, cy + 11, a, "m xs")
        for j, d in enumerate(ids):
            cx = x0 + j * CELL
            if m.graph.class_graph.has_edge(a, d):
                b.rect(cx + 1, cy + 1, CELL - 2, CELL - 2, "#3B4650", rx=2)
            else:
                b.rect(cx + 1, cy + 1, CELL - 2, CELL - 2, "#F3F5F7",
                       "#B8C2CC" if i == j else "#DDE3E9", rx=2)
    b.h = y0 + len(ids) * CELL + 8
    return b


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
