"""Exports of the compatibility graph: SVG picture, DOT and JSON."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from livepolicy.facts.kubeobjects import build_facts
from livepolicy.graph.compat import CompatibilityGraph, build_graph
from livepolicy.graph.export import to_dot, to_json
from livepolicy.graph.svg import CUSTOM_GROUP, SUMMARY_THRESHOLD, to_svg
from livepolicy.rules.base import Context

SVG = "{http://www.w3.org/2000/svg}"
MANAGED = {"provisioner.cast.ai/managed-by": "cast.ai"}


def cluster_info(platform: str = "eks", version: str = "v1.31.4-eks-1a2b3c") -> dict[str, Any]:
    return {
        "apiVersion": "livepolicy.io/v1alpha1", "kind": "ClusterInfo",
        "metadata": {"name": "demo"},
        "spec": {"platform": platform, "kubernetesVersion": version, "region": "us-east-1",
                 "subnets": [{"id": "subnet-a", "zone": "us-east-1a", "cidr": "10.0.0.0/20"},
                             {"id": "subnet-a2", "zone": "us-east-1a",
                              "cidr": "10.0.32.0/20"},
                             {"id": "subnet-b", "zone": "us-east-1b", "cidr": "10.0.16.0/20"}]},
    }


def node(name: str, zone: str = "us-east-1a", subnet: str | None = "subnet-a",
         itype: str = "m5.xlarge", arch: str = "amd64", managed: bool = True,
         containerd: str = "2.0.5", ready: bool = True,
         os_image: str = "Amazon Linux 2023.6.20250115",
         extra: dict[str, str] | None = None) -> dict[str, Any]:
    """A Node object shaped like tests/cases/basic/cluster.yaml."""
    labels = {"kubernetes.io/arch": arch, "topology.kubernetes.io/zone": zone,
              "topology.kubernetes.io/region": "us-east-1",
              "node.kubernetes.io/instance-type": itype,
              **(MANAGED if managed else {}), **(extra or {})}
    if subnet:
        labels["topology.cast.ai/subnet-id"] = subnet
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "creationTimestamp": "2026-10-30T00:00:00Z",
                     "labels": labels},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "nodeInfo": {"architecture": arch,
                         "containerRuntimeVersion": f"containerd://{containerd}",
                         "osImage": os_image, "kernelVersion": "6.1.0"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def eniconfig(name: str) -> dict[str, Any]:
    return {"apiVersion": "crd.k8s.amazonaws.com/v1alpha1", "kind": "ENIConfig",
            "metadata": {"name": name}, "spec": {"subnet": "subnet-pods-c"}}


AVX512 = {"feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true",
          "feature.node.kubernetes.io/cpu-cpuid.AVX2": "true"}
AVX2 = {"feature.node.kubernetes.io/cpu-cpuid.AVX2": "true"}
CUSTOM = {"live.cast.ai/custom-network": "true"}


def small_items() -> list[dict[str, Any]]:
    """Two standard zones (three subnets), one custom-networking zone, four blocked nodes."""
    return [
        cluster_info(),
        eniconfig("us-east-1c"),
        node("ip-10-0-1-11.ec2.internal", extra=AVX512),
        node("ip-10-0-1-12.ec2.internal", itype="c5.2xlarge", extra=AVX512),
        node("ip-10-0-1-13.ec2.internal", itype="r5.large", extra=AVX2),
        node("ip-10-0-1-14.ec2.internal", itype="m5.2xlarge", extra=AVX2),
        node("ip-10-0-1-20.ec2.internal", itype="m6g.large", arch="arm64"),
        node("ip-10-0-1-21.ec2.internal", itype="c6g.xlarge", arch="arm64"),
        node("ip-10-0-1-30.ec2.internal", itype="c3.xlarge"),
        node("ip-10-0-1-40.ec2.internal", managed=False),
        node("ip-10-0-1-41.ec2.internal", containerd="1.7.22", ready=False),
        node("ip-10-0-33-5.ec2.internal", subnet="subnet-a2"),
        node("ip-10-0-33-6.ec2.internal", subnet="subnet-a2", itype="c5.large"),
        node("ip-10-0-17-5.ec2.internal", zone="us-east-1b", subnet="subnet-b"),
        node("ip-10-0-17-6.ec2.internal", zone="us-east-1b", subnet="subnet-b",
             itype="r5.xlarge"),
        node("ip-10-0-17-7.ec2.internal", zone="us-east-1b", subnet="subnet-b",
             os_image="Amazon Linux 2"),
        node("ip-10-0-48-1.ec2.internal", zone="us-east-1c", subnet=None, extra=CUSTOM),
        node("ip-10-0-48-2.ec2.internal", zone="us-east-1c", subnet=None, extra=CUSTOM),
        node("ip-10-0-48-3.ec2.internal", zone="us-east-1c", subnet=None, itype="c5.xlarge"),
        node("cast-pool-general-purpose-7f9c2d1e-a1b2c3d4e5", zone="us-east-1b",
             subnet="subnet-b", itype="m5.large", managed=False),
    ]


def graph_of(items: list[dict[str, Any]]) -> CompatibilityGraph:
    problems: list[tuple[str, str]] = []
    facts = build_facts(items, lambda ptr, msg: problems.append((ptr, msg)))
    assert problems == []
    return build_graph(Context(facts))


@pytest.fixture(scope="module")
def small() -> CompatibilityGraph:
    return graph_of(small_items())


def large_items(n: int = 1000) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [cluster_info()]
    zones = [("us-east-1a", "subnet-a"), ("us-east-1a", "subnet-a2"), ("us-east-1b", "subnet-b")]
    types = ["m5.xlarge", "c5.2xlarge", "m6g.large", "c3.large", "m7i.large"]
    for i in range(n):
        zone, subnet = zones[i % len(zones)]
        itype = types[(i // 3) % len(types)]
        arch = "arm64" if "6g" in itype else "amd64"
        items.append(node(f"ip-10-{i // 250}-{i % 250}-1.ec2.internal", zone=zone,
                          subnet=subnet, itype=itype, arch=arch, managed=i % 37 != 0))
    return items


def svg_texts(root: ET.Element) -> list[str]:
    return ["".join(el.itertext()) for el in root.iter(f"{SVG}text")]


def titles(root: ET.Element) -> list[str]:
    return [el.text or "" for el in root.iter(f"{SVG}title")]


# ------------------------------------------------------------------------ the small graph

def test_small_graph_shape(small: CompatibilityGraph) -> None:
    blocked = {n for n in small.node_verdicts if not small.usable(n)}
    assert blocked == {"ip-10-0-1-40.ec2.internal", "ip-10-0-1-41.ec2.internal",
                       "ip-10-0-17-7.ec2.internal",
                       "cast-pool-general-purpose-7f9c2d1e-a1b2c3d4e5"}
    assert small.cluster_blockers == []
    assert len(small.classes) >= 6
    # custom networking with the source label is directed: 48-1 -> 48-3, never back
    assert small.has_edge("ip-10-0-48-1.ec2.internal", "ip-10-0-48-3.ec2.internal")
    assert not small.has_edge("ip-10-0-48-3.ec2.internal", "ip-10-0-48-1.ec2.internal")
    # CPU features are directed too: AVX2 -> AVX512 only
    assert small.has_edge("ip-10-0-1-13.ec2.internal", "ip-10-0-1-11.ec2.internal")
    assert not small.has_edge("ip-10-0-1-11.ec2.internal", "ip-10-0-1-13.ec2.internal")


# ------------------------------------------------------------------------ SVG

def test_svg_parses_and_names_every_node(small: CompatibilityGraph) -> None:
    text = to_svg(small)
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    width, height = int(root.attrib["width"]), int(root.attrib["height"])
    assert root.attrib["viewBox"] == f"0 0 {width} {height}"
    assert 600 < width < 4000 and 300 < height < 4000
    tips = "\n".join(titles(root))
    shown = "\n".join(svg_texts(root))
    for name in small.node_verdicts:
        assert name in tips  # full name in the tooltip
        assert name.split(".")[0][:12] in shown  # (possibly shortened) name on the tile
    for c in small.classes:
        assert c.id in shown and c.label in shown


def test_svg_is_self_contained(small: CompatibilityGraph) -> None:
    text = to_svg(small)
    assert text.isascii()
    for forbidden in ("<script", "@import", "@font-face", "xlink:href", "<image", "http://",
                      "https://"):
        assert forbidden not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_svg_marks_blocked_nodes(small: CompatibilityGraph) -> None:
    root = ET.fromstring(to_svg(small))
    groups = {(g.findtext(f"{SVG}title") or "").split("\n")[0]: g
              for g in root.iter(f"{SVG}g") if g.find(f"{SVG}title") is not None}
    blocked = {"ip-10-0-1-40.ec2.internal": ["ND001"],
               "ip-10-0-1-41.ec2.internal": ["ND003", "ND004"],
               "ip-10-0-17-7.ec2.internal": ["ND002"]}
    for name, codes in blocked.items():
        g = groups[name]
        assert "blocked:" in (g.findtext(f"{SVG}title") or "")
        rect = g.find(f"{SVG}rect")
        assert rect is not None and rect.attrib["stroke"] == "#C62828"
        assert len(g.findall(f"{SVG}line")) == 2  # the red cross
        shown = " ".join(svg_texts(g))
        assert all(code in shown for code in codes) or f"{codes[0]} +" in shown
    usable = groups["ip-10-0-1-11.ec2.internal"]
    assert usable.findall(f"{SVG}line") == []
    rect = usable.find(f"{SVG}rect")
    assert rect is not None and rect.attrib["fill"].startswith("#")
    # the legend counts blocked nodes per rule
    legend = svg_texts(root)
    assert "managed-node" in legend and "blocked (cannot send or receive)" in legend


def test_svg_groups_by_zone_and_subnet(small: CompatibilityGraph) -> None:
    shown = svg_texts(ET.fromstring(to_svg(small)))
    for zone in ("zone us-east-1a", "zone us-east-1b", "zone us-east-1c"):
        assert zone in shown
    joined = "\n".join(shown)
    assert "subnet-a (10.0.0.0/20)" in joined
    assert "subnet-a2 (10.0.32.0/20)" in joined
    assert "subnet-b (10.0.16.0/20)" in joined
    assert f"{CUSTOM_GROUP} \u2013 3 nodes" in joined


def test_svg_colours_follow_class_order(small: CompatibilityGraph) -> None:
    root = ET.fromstring(to_svg(small))
    fills: dict[str, set[str]] = {}
    for g in root.iter(f"{SVG}g"):
        tip = g.findtext(f"{SVG}title")
        rect = g.find(f"{SVG}rect")
        if tip and rect is not None and "\nclass " in tip:
            cid = tip.split("\nclass ")[1].split(":")[0]
            fills.setdefault(cid, set()).add(rect.attrib["fill"])
    assert set(fills) == {c.id for c in small.classes}
    assert all(len(f) == 1 for f in fills.values())  # one colour per class
    assert len({next(iter(f)) for f in fills.values()}) == len(fills)  # distinct colours


def test_svg_legend_lists_destinations(small: CompatibilityGraph) -> None:
    shown = "\n".join(svg_texts(ET.fromstring(to_svg(small))))
    assert "within class" in shown
    for c in small.classes:
        assert f"{len(c.members)} node" in shown
    src = small.class_of["ip-10-0-48-1.ec2.internal"]
    dst = small.class_of["ip-10-0-48-3.ec2.internal"]
    assert src != dst and small.class_graph.has_edge(src, dst)
    assert re.search(rf"\u2192 .*{dst}", shown)


def test_svg_cluster_blockers_banner() -> None:
    g = graph_of([cluster_info(platform="gke", version="v1.29.1"),
                  node("n1"), node("n2", managed=False)])
    assert {v.code for v in g.cluster_blockers} == {"CL001", "CL002"}
    root = ET.fromstring(to_svg(g))
    shown = "\n".join(svg_texts(root))
    assert "Cluster blocked" in shown
    assert "CL001" in shown and "CL002" in shown
    assert any(r.attrib.get("fill") == "#C62828" for r in root.iter(f"{SVG}rect"))
    assert "n1" in shown and "n2" in shown
    assert "cluster" in shown  # n1 is only blocked by the cluster rules


def test_svg_escapes_text() -> None:
    items = [cluster_info(), node("a<b>&\"c'", subnet="subnet-<x>&y")]
    items[0]["metadata"]["name"] = "demo <&> \"q\""
    text = to_svg(graph_of(items))
    root = ET.fromstring(text)
    assert "a<b>&\"c'" in "\n".join(titles(root))
    assert "subnet-<x>&y" in "\n".join(svg_texts(root))


def test_svg_empty_cluster() -> None:
    root = ET.fromstring(to_svg(graph_of([cluster_info()])))
    assert "no nodes in the snapshot" in svg_texts(root)


def test_svg_is_deterministic(small: CompatibilityGraph) -> None:
    again = graph_of(small_items())
    shuffled = graph_of(list(reversed(small_items())))
    assert to_svg(small) == to_svg(small) == to_svg(again) == to_svg(shuffled)


def test_svg_same_bytes_across_processes(small: CompatibilityGraph) -> None:
    """Set and dict order must not leak into the output (PYTHONHASHSEED varies per run)."""
    code = ("import hashlib, sys; from tests.test_graph_export import graph_of, small_items; "
            "from livepolicy.graph.svg import to_svg; "
            "sys.stdout.write(hashlib.sha256(to_svg(graph_of(small_items())).encode())"
            ".hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert digests == {hashlib.sha256(to_svg(small).encode()).hexdigest()}


def test_svg_large_cluster_summary() -> None:
    g = graph_of(large_items(1000))
    assert len(g.node_verdicts) == 1000 > SUMMARY_THRESHOLD
    text = to_svg(g)
    assert len(text.encode()) < 300_000
    root = ET.fromstring(text)
    shown = "\n".join(svg_texts(root))
    assert "More than 400 nodes" in shown
    assert "ip-10-0-5-1" not in text  # no individual nodes
    assert "zone us-east-1a" in shown and "zone us-east-1b" in shown
    assert "subnet-a2 (10.0.32.0/20) \u2013 333 nodes" in shown
    for c in g.classes:
        assert c.id in shown
    assert int(root.attrib["width"]) < 3000 and int(root.attrib["height"]) < 3000
    assert text == to_svg(graph_of(large_items(1000)))


def test_svg_medium_cluster_draws_every_node() -> None:
    g = graph_of(large_items(SUMMARY_THRESHOLD))
    text = to_svg(g)
    root = ET.fromstring(text)
    assert "More than" not in text
    assert len([t for t in titles(root) if t.startswith("ip-")]) == SUMMARY_THRESHOLD
    assert int(root.attrib["width"]) <= 4000


# ------------------------------------------------------------------------ JSON and DOT

def test_json_edges_match_has_edge(small: CompatibilityGraph) -> None:
    data = to_json(small)
    cls = {c["id"]: c for c in data["classes"]}
    node_class = {n["name"]: n["class"] for n in data["nodes"]}
    names = sorted(node_class)
    assert names == sorted(small.node_verdicts)
    class_edges = {tuple(e) for e in data["class_edges"]}
    for a, b in itertools.product(names, names):
        ca, cb = node_class[a], node_class[b]
        via_json = a != b and ca is not None and cb is not None and (ca, cb) in class_edges
        assert via_json == small.has_edge(a, b), (a, b)
        if ca is not None and cb is not None:
            assert ((cb in cls[ca]["destinations"]) and a != b) == small.has_edge(a, b)
    for n in data["nodes"]:
        assert (n["class"] is None) == bool(n["blocked"])
        if n["class"] is not None:
            assert n["name"] in cls[n["class"]]["members"]
    assert data["cluster_blocked"] == []


def test_json_node_graph_agrees(small: CompatibilityGraph) -> None:
    g = small.node_graph()
    data = to_json(small)
    expected = {(a, b) for a, b in itertools.product(small.node_verdicts, repeat=2)
                if small.has_edge(a, b)}
    assert set(g.edges) == expected
    assert sum(len(small.members[a]) * len(small.members[b]) - (len(small.members[a])
               if a == b else 0) for a, b in data["class_edges"]) == len(expected)


def test_dot_mentions_every_class(small: CompatibilityGraph) -> None:
    dot = to_dot(small)
    assert dot.startswith("digraph livepolicy {") and dot.rstrip().endswith("}")
    for c in small.classes:
        assert re.search(rf"^  {c.id} \[label=", dot, re.M)
    for a, b in small.class_graph.edges:
        assert f"  {a} -> {b};" in dot
    assert "blocked [label=" in dot and "ip-10-0-1-40.ec2.internal" in dot
    assert dot == to_dot(graph_of(small_items()))
