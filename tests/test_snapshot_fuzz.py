"""Malformed snapshots never end in a traceback: any value, anywhere, is reported or used.

Hypothesis replaces values at random places of the embedded example with values of the
wrong type or range; facts must still be built (problems reported with their pointers)
and a plan made from them. This found a map in a quantity field and a non-list `values`
in a PV's node affinity, both of which used to crash.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livepolicy.cli.common import load_policies
from livepolicy.core.yamlsrc import load_fast
from livepolicy.facts.kubeobjects import build_facts
from livepolicy.planner.plan import make_plan
from livepolicy.policy.load import PolicySet

WRONG = [None, 0, -3, 2.5, float("inf"), float("nan"), "x", "", True, [], {}, [1, "a"],
         {"a": 1}, "999999999999Gi", "-1", "1e400", "10.0.0.0/8"]
EDITS = st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0),
                           st.sampled_from(WRONG)), min_size=1, max_size=4)
Path_ = tuple[str | int, ...]


@cache
def _example() -> tuple[list[dict[str, Any]], dict[str, list[tuple[int, Path_]]], PolicySet]:
    """The example's items, and every place in them by kind: a kind is chosen first, so
    the few PVs and PDBs are edited as often as the hundreds of pods."""
    items = load_fast(Path("examples/cluster.yaml"))["items"]
    places: dict[str, list[tuple[int, Path_]]] = {}
    for i, obj in enumerate(items):
        places.setdefault(str(obj.get("kind")), []).extend((i, p) for p in _paths(obj))
    return items, places, load_policies("examples/policies")


def _paths(obj: Any, pre: Path_ = ()) -> Iterator[Path_]:
    children = obj.items() if isinstance(obj, dict) else (
        enumerate(obj) if isinstance(obj, list) else ())
    for key, value in children:
        yield (*pre, key)
        yield from _paths(value, (*pre, key))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EDITS)
def test_any_wrong_value_is_reported_not_raised(edits: list[tuple[int, int, Any]]) -> None:
    _facts_and_plan(edited_example(edits), _example()[2])


def edited_example(edits: list[tuple[int, int, Any]]) -> list[dict[str, Any]]:
    """A copy of the example's items with each edit's value put at the place it picks
    (a kind first, then a place in objects of that kind)."""
    items, places, _ = _example()
    items = copy.deepcopy(items)
    kinds = sorted(places)
    for kind_pick, pick, value in edits:
        where = places[kinds[kind_pick % len(kinds)]]
        i, path = where[pick % len(where)]
        target: Any = items[i]
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # an earlier edit replaced the parent
            continue
    return items


def _facts_and_plan(items: list[dict[str, Any]], ps: PolicySet) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    facts = build_facts(items, lambda pointer, message: problems.append((pointer, message)))
    assert all(p.startswith("/items/") and m for p, m in problems)
    make_plan(facts, ps, datetime(2026, 11, 1, tzinfo=UTC))
    return problems


def _first(items: list[dict[str, Any]], kind: str) -> tuple[int, dict[str, Any]]:
    return next((i, o) for i, o in enumerate(items) if o.get("kind") == kind)


def test_a_map_where_a_quantity_belongs_is_a_located_problem() -> None:
    items, _, ps = _example()
    items = copy.deepcopy(items)
    i, node = _first(items, "Node")
    node["status"]["allocatable"]["memory"] = {"value": "8Gi"}
    problems = _facts_and_plan(items, ps)
    assert [p for p, _ in problems] == [f"/items/{i}/status/allocatable/memory"]


def test_pv_affinity_values_that_are_not_a_list_give_no_zone_from_them() -> None:
    items, _, ps = _example()
    items = copy.deepcopy(items)
    _, pv = _first(items, "PersistentVolume")
    pv["metadata"].get("labels", {}).clear()
    pv["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": "us-east-1a"}]}]}}
    _facts_and_plan(items, ps)


def test_quantities_beyond_int64_are_located_problems() -> None:
    """Kubernetes keeps quantities in int64; beyond it, plans could not hash the pod."""
    items, _, ps = _example()
    items = copy.deepcopy(items)
    i, pod = _first(items, "Pod")
    pod["spec"]["containers"][0]["resources"] = {"limits": {"memory": "100Ei"}}
    two = copy.deepcopy(pod)
    two["metadata"]["name"] += "-two"
    two["spec"]["containers"] = [{"name": n, "resources": {"requests": {"memory": "5Ei"}}}
                                 for n in ("a", "b")]
    items.append(two)
    problems = _facts_and_plan(items, ps)
    assert (f"/items/{i}/spec/containers/0/resources/limits/memory", "invalid memory "
            "quantity '100Ei'") in problems
    assert any(p == f"/items/{len(items) - 1}/spec/containers" and "add up" in m
               for p, m in problems)


def test_odd_statefulset_ordinals_are_no_ordinal() -> None:
    items = copy.deepcopy(_example()[0])
    pod = next(o for o in items if o.get("kind") == "Pod" and any(
        r.get("kind") == "StatefulSet" for r in o["metadata"].get("ownerReferences", [])))
    for suffix in ("\u00b2", "9" * 5000):
        pod["metadata"]["name"] = f"web-{suffix}"
        facts = build_facts(items, lambda p, m: None)
        assert next(p for p in facts.pods if p.name == f"web-{suffix}").ordinal == -1
