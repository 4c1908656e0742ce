"""Drawing primitives of the SVG picture: palette, sizes, text escaping and measuring.

Kept apart from layout and legend so every part of the picture measures text, escapes it
and emits elements the same way (ASCII-only, deterministic bytes).
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

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
