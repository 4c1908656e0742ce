"""`--target` on plan and apply (issue 11): the plan cut down to some pods, nodes or
policies, said so wherever it is shown, and applied without touching the rest."""

from __future__ import annotations

import json
from typing import Any

import pytest

from livepolicy.apply.targets import Target, parse_target, parse_targets
from livepolicy.core.diagnostics import DiagnosticError
from livepolicy.planner.serialize import read_plan

from .conftest import PLANNED, Case, of_type, parse_events


@pytest.mark.parametrize(("text", "expected"), [
    ("shop/db-0", Target("pod", "shop/db-0")),
    ("pod/shop/db-0", Target("pod", "shop/db-0")),
    ("node/a3", Target("node", "a3")),
    ("policy/drain-cordoned", Target("policy", "drain-cordoned")),
    ("pod/node", Target("pod", "pod/node")),  # a pod `node` in namespace `pod`
])
def test_targets_parse(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["db-0", "node/", "node/a/b", "policy/", "shop/db/0", "/x",
                                  "pod/shop/db/0", ""])
def test_bad_targets_are_located_problems(text: str) -> None:
    with pytest.raises(DiagnosticError) as err:
        parse_targets(["shop/ok", text, "node/"])
    assert [d.file for d in err.value.diagnostics] == ["--target", "--target"]
    assert any(repr(text) in d.message for d in err.value.diagnostics)


def _plan(case: Case, *targets: str) -> dict[str, Any]:
    args = [a for t in targets for a in ("--target", t)]
    r = case.invoke("plan", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                    "--out", "plan.json", *args)
    assert r.returncode == 0, r.stderr
    assert "Warning: this plan is targeted (" in " ".join(r.stdout.split())
    return read_plan(case.plan_file)  # the fingerprint of the cut plan holds


@pytest.mark.parametrize(("targets", "pods"), [
    (["shop/db-0"], ["shop/db-0"]),
    (["node/a3"], ["shop/web-5d8f-aaaaa", "shop/web-5d8f-bbbbb"]),
    (["policy/drain-cordoned"], sorted(PLANNED)),
    (["shop/db-0", "pod/shop/web-5d8f-aaaaa", "shop/db-0"], ["shop/db-0",
                                                             "shop/web-5d8f-aaaaa"]),
])
def test_plan_keeps_only_the_targeted_migrations(case: Case, targets: list[str],
                                                 pods: list[str]) -> None:
    whole = case.plan()
    doc = _plan(case, *targets)
    assert sorted(m["pod"] for m in doc["migrations"]) == pods
    assert doc["fingerprint"] != whole["fingerprint"]
    assert doc["targets"] == [str(parse_target(t)) for t in dict.fromkeys(targets)]
    kept = {m["id"] for m in doc["migrations"]}
    for m in doc["migrations"]:
        assert set(m.get("depends_on", [])) <= kept
    assert {lc["pod"] for lc in doc["labels"]} <= set(pods)
    assert doc["summary"]["migrations"] == len(pods)
    shown = case.invoke("show", "plan.json")
    assert "Warning: this plan is targeted" in shown.stdout
    md = case.invoke("show", "plan.json", "--markdown")
    assert md.stdout.startswith("> **Warning: this plan is targeted")


def test_a_target_that_matches_nothing_is_said(case: Case) -> None:
    r = case.invoke("plan", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                    "--target", "node/nowhere", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["migrations"] == []
    assert "--target node/nowhere matches no planned migration" in r.stderr


def test_apply_of_a_targeted_plan_moves_only_its_pods(case: Case) -> None:
    _plan(case, "shop/db-0")
    r = case.invoke(*case.apply_args())
    assert r.returncode == 0, r.stdout + r.stderr
    events = parse_events(r.stdout)
    assert events[0]["type"] == "version"
    (note,) = of_type(events, "targeted")
    assert note["@level"] == "warn" and note["targets"] == ["pod/shop/db-0"]
    assert events[-1]["changes"]["migrated"] == 1
    after = case.facts()
    assert after.pod_by_key["shop/db-0"].node == "a2"
    assert after.pod_by_key["shop/web-5d8f-aaaaa"].node == "a1"  # not targeted: untouched
    assert after.pod_by_key["shop/web-5d8f-bbbbb"].node == "a1"
    rest = case.plan()
    assert sorted(m["pod"] for m in rest["migrations"]) == ["shop/web-5d8f-aaaaa",
                                                            "shop/web-5d8f-bbbbb"]


def test_apply_without_a_plan_file_takes_targets(case: Case) -> None:
    r = case.invoke("apply", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                    "--agents", "sim", "--yes", "--sim-time-scale", "0.001",
                    "--target", "node/a3")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stderr.split())
    assert "Warning: this plan is targeted (node/a3)" in text
    assert "2 migrated" in text
    assert case.facts().pod_by_key["shop/db-0"].node == "a1"


def test_targets_with_a_saved_plan_are_refused(case: Case) -> None:
    case.plan()
    before = case.cluster.read_text()
    r = case.invoke(*case.apply_args("--target", "shop/db-0"))
    assert r.returncode == 1
    (event,) = parse_events(r.stdout)
    assert "make the plan with --target" in event["@message"]
    assert case.cluster.read_text() == before and not case.state.exists()
