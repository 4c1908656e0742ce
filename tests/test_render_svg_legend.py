"""The SVG legend's destination list agrees with the class graph (and so with its matrix)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from livepolicy.graph.compat import CompatibilityGraph
from livepolicy.graph.svg import to_svg
from tests.test_graph_export import AVX2, AVX512, SVG, cluster_info, graph_of, node, small_items

AMX = {**AVX512, "feature.node.kubernetes.io/cpu-cpuid.AMXTILE": "true"}


def legend_destinations(svg: str) -> dict[str, str]:
    """Class id -> the '→ ...' text of its legend entry (wrapped lines joined)."""
    out: dict[str, str] = {}
    for g in ET.fromstring(svg).iter(f"{SVG}g"):
        title = g.find(f"{SVG}title")
        if title is None or not title.text or ":" not in title.text:
            continue
        texts = ["".join(t.itertext()) for t in g.findall(f"{SVG}text")]
        start = next((i for i, t in enumerate(texts) if t.startswith("\u2192 ")), None)
        if start is not None:
            out[title.text.split(":", 1)[0]] = " ".join(texts[start:])[2:]
    return out


def expand(text: str, ids: list[str]) -> set[str]:
    r"""'within class, c02, c04\u2013c06' -> {self marker, c02, c04, c05, c06}."""
    got: set[str] = set()
    for part in text.split(", "):
        if "\u2013" in part:
            a, b = part.split("\u2013")
            got.update(ids[ids.index(a): ids.index(b) + 1])
        elif part != "no destination":
            got.add(part)
    return got


def check_legend(g: CompatibilityGraph) -> None:
    ids = [c.id for c in g.classes]
    shown = legend_destinations(to_svg(g))
    assert set(shown) == set(ids)
    for cid in ids:
        want = {("within class" if d == cid else str(d)) for d in g.class_graph.successors(cid)}
        assert expand(shown[cid], ids) == want, (cid, shown[cid])


def test_legend_lists_both_of_two_consecutive_destinations() -> None:
    # Four CPU-feature levels in one subnet: class c02 sends to exactly c03 and c04, a run
    # of two that the legend used to print as "c03" alone while the matrix showed both.
    g = graph_of([cluster_info(), node("n1", extra=AVX2), node("n2", extra=AVX512),
                  node("n3", extra=AMX), node("n4")])
    ids = [c.id for c in g.classes]
    pairs = []
    for c in ids:
        others = sorted(ids.index(str(d)) for d in g.class_graph.successors(c) if d != c)
        if len(others) == 2 and others[1] == others[0] + 1:
            pairs.append(c)
    assert pairs, "the case must have a class with two adjacent destination classes"
    check_legend(g)


def test_legend_agrees_with_graph_on_the_small_cluster() -> None:
    check_legend(graph_of(small_items()))
