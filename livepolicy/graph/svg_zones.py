"""The zones area of the SVG picture: node tiles (or per-class bars above
`SUMMARY_THRESHOLD` nodes) in subnet groups, zone boxes arranged to a target aspect.

Separate from the legend because it owns the page layout search and scales with node count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from livepolicy.facts.model import NodeFacts
from livepolicy.graph.svg_draw import (
    ASPECT,
    BLOCKED_TEXT,
    GAP,
    GPAD,
    GTITLE_H,
    LEGEND_W,
    MAX_AREA_W,
    MAX_COLS,
    MIN_COLS,
    RED,
    SOFT,
    SUM_MAX_ROWS,
    SUM_ROW_H,
    SUM_ZONE_W,
    TILE_H,
    TILE_W,
    ZPAD,
    ZTITLE_H,
    _Block,
    _esc,
    _fit,
    _fit_end,
    _plural,
    _text_w,
)
from livepolicy.graph.svg_model import _Group, _id_runs, _Model, _Zone

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
