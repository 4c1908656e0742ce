"""The legend of the SVG picture: one entry per class (colour, label, size, destinations),
the blocked-node codes and a row -> column matrix of the class graph.

Separate from the zones area: it scales with the number of classes, not of nodes.
"""

from __future__ import annotations

import math
from collections import Counter

from livepolicy.graph.svg_draw import (
    CELL,
    GAP,
    LEGEND_MAX_COLS,
    LEGEND_W,
    MATRIX_MAX,
    RED,
    SOFT,
    _Block,
    _esc,
    _fit_end,
    _plural,
    _text_w,
    _wrap,
)
from livepolicy.graph.svg_model import _id_runs, _Model
from livepolicy.rules.registry import rule_by_code

# ------------------------------------------------------------------------ legend


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
