"""A saved plan whose inputs changed is refused, naming what changed, before any agent is
started; a resumed run of the same plan is not refused for what it changed itself."""

from __future__ import annotations

import json

import pytest

from livepolicy.apply.journal import Journal

from .conftest import (
    FIRST,
    PLANNED,
    Case,
    RigFactory,
    agents_of,
    assert_each_pod_once,
    of_type,
    parse_events,
    pods_on_agents,
    unfinished_migrations,
)

POD_DB = ("      containers: [{name: db, resources: {requests: {cpu: \"1\", memory: 2Gi}}}]",
          "      containers: [{name: db, resources: {requests: {cpu: \"1\", memory: 3Gi}}}]")


def _refused(case: Case, *expected: str) -> None:
    before = case.cluster.read_text()
    r = case.invoke(*case.apply_args())
    assert r.returncode == 1, r.stdout + r.stderr
    (event,) = parse_events(r.stdout)
    assert event["type"] == "diagnostic" and event["@level"] == "error"
    assert event["@message"].startswith("Saved plan is stale: ")
    for text in expected:
        assert text in event["@message"], event["@message"]
        assert text in r.stderr
    assert case.cluster.read_text() == before
    assert not (case.state / "sim-agents").exists(), "agents were started"


@pytest.mark.parametrize("what,path,old,new,expected", [
    ("pod", "cluster.yaml", *POD_DB, "Pod/shop/db-0 changed"),
    ("pod-removed", "cluster.yaml", "      name: web-5d8f-bbbbb\n", "      name: web-5d8f-ccccc\n",
     "Pod/shop/web-5d8f-bbbbb no longer exists"),
    ("node", "cluster.yaml", "      name: a3\n      creationTimestamp: \"2026-10-30T00:00:00Z\"\n"
     "      labels: {<<: *alabels, node.kubernetes.io/instance-type: r5.large}\n    spec: {}",
     "      name: a3\n      creationTimestamp: \"2026-10-30T00:00:00Z\"\n"
     "      labels: {<<: *alabels, node.kubernetes.io/instance-type: r5.large}\n"
     "    spec: {unschedulable: true}", "Node/a3 changed"),
    ("policy", "policies.yaml", "    cordoned: true\n",
     "    cordoned: true\n  budgets: {maxParallel: 1}\n",
     "policy MigrationPolicy/drain-cordoned changed"),
])
def test_changed_input_makes_a_saved_plan_stale(case: Case, what: str, path: str, old: str,
                                                new: str, expected: str) -> None:
    case.plan()
    case.edit(case.dir / path, old, new)
    _refused(case, expected)


def test_resumed_run_is_not_stale_for_what_it_changed(case: Case, rig: RigFactory) -> None:
    """Run 1 (in-process, its faults armed) moves two pods and writes every label into the
    snapshot but leaves one migration 'failed' (its destination refused the rollback).
    Re-running the saved plan is not stale for those pods: it recovers and finishes."""
    r = rig(recovery_timeout=1.0)
    case.plan_file.write_text(json.dumps(r.doc))
    m3 = r.migration("m00003")
    dst = r.pool.client(m3["to"])
    dst.set_fault("verify", "fail", mid=r.mid("m00003"))
    dst.set_fault("rollback", "fail", count=1000, mid=r.mid("m00003"))
    first = r.run()
    assert {k: o.result for k, o in first.outcomes.items()} == {
        FIRST: "migrated", "m00002": "migrated", "m00003": "failed"}, first.outcomes
    r.pool.stop()
    moved = case.facts()
    assert moved.pod_by_key["shop/web-5d8f-aaaaa"].node == "a3"
    assert moved.pod_by_key["shop/db-0"].labels["live.cast.ai/migration-enabled"] == "true"

    again = case.invoke(*case.apply_args())
    assert again.returncode == 0, again.stdout + again.stderr
    events = parse_events(again.stdout)
    assert events[-1]["changes"]["migrated"] == 3
    (start,) = of_type(events, "apply_start")
    assert start["migration"]["id"] == "m00003" and start["attempt"] == 1
    with agents_of(case) as pool:
        assert_each_pod_once(pods_on_agents(pool), case.facts(), PLANNED)
        assert unfinished_migrations(pool) == []
    replan = case.invoke("plan", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                      "--detailed-exitcode")
    assert replan.returncode == 0, replan.stdout


def test_resumed_run_still_sees_a_changed_node(case: Case, rig: RigFactory) -> None:
    """Only what apply itself changes is forgiven: a node cordoned meanwhile is not, nor
    is a pod it moved that is gone since."""
    r = rig(recovery_timeout=1.0)
    case.plan_file.write_text(json.dumps(r.doc))
    m3 = r.migration("m00003")
    dst = r.pool.client(m3["to"])
    dst.set_fault("verify", "fail", mid=r.mid("m00003"))
    dst.set_fault("rollback", "fail", count=1000, mid=r.mid("m00003"))
    r.run()
    r.pool.stop()
    case.edit(case.cluster, "      labels: {<<: *alabels, node.kubernetes.io/instance-type: "
              "c5.2xlarge}\n    spec: {}", "      labels: {<<: *alabels, "
              "node.kubernetes.io/instance-type: c5.2xlarge}\n    spec: {unschedulable: true}")
    case.edit(case.cluster, "name: web-5d8f-bbbbb\n", "name: web-5d8f-ccccc\n")
    r2 = case.invoke(*case.apply_args())
    assert r2.returncode == 1
    (event,) = parse_events(r2.stdout)
    assert event["@message"] == (
        "Saved plan is stale: Node/a2 changed; Pod/shop/web-5d8f-bbbbb no longer exists. "
        "Run `livepolicy plan` again."), "the pods it moved are not called changed"
    journal = Journal(next(case.state.glob("runs/*/journal.jsonl")))
    assert journal.records()["m00003"].phase == "failed", "the stale run changed nothing"
    journal.close()
