"""A lean snapshot gives exactly the facts of the full one."""

from __future__ import annotations

from typing import Any

from bench.synth import generate
from livepolicy.facts.kubeobjects import build_facts
from livepolicy.facts.lean import lean_snapshot
from livepolicy.facts.model import ClusterFacts


def facts(items: list[Any]) -> ClusterFacts:
    problems: list[tuple[str, str]] = []
    out = build_facts(items, lambda p, m: problems.append((p, m)))
    assert not problems
    return out


def test_lean_snapshot_has_the_same_facts_and_is_smaller() -> None:
    import orjson

    full = generate(40, 20, seed=3)
    lean = lean_snapshot(full)
    a, b = facts(full["items"]), facts(lean["items"])
    assert a.nodes == b.nodes
    assert a.pods == b.pods
    assert a.pdbs == b.pdbs and a.info == b.info and a.eniconfigs == b.eniconfigs
    assert len(orjson.dumps(lean)) * 3 < len(orjson.dumps(full))
