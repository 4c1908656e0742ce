"""The walk: failed dependencies, onFailure (rollback / abort / evict), maintenance windows.

In the basic plan m00002 and m00003 depend on m00001 (budgets: one web pod at a time, two
migrations out of a1 at once).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from .conftest import (
    FIRST,
    PLANNED,
    Case,
    RigFactory,
    assert_each_pod_once,
    of_type,
    unfinished_migrations,
)

DEPENDENTS = ("m00002", "m00003")


def _on_failure(value: str) -> Callable[[Case], None]:
    def edit(case: Case) -> None:
        case.edit(case.policies, "spec:\n", f"spec:\n  onFailure: {value}\n")
    return edit


def _window(case: Case) -> None:
    case.edit(case.policies, "spec:\n", "spec:\n  windows:\n    - {schedule: '0 1 * * *', "
              "duration: 1h, timeZone: UTC}\n")


def test_failed_dependency_skips_its_dependents_once_and_rerun_recovers(
        rig: RigFactory) -> None:
    """A destination that keeps refusing rollback leaves the pod 'failed' (its state is
    unknown: the restored copy may run); its dependents are skipped, each reported once
    (no cascade of errors). A re-run once the agent behaves rolls it back and migrates it
    with a new attempt; the skipped ones stay skipped (re-plan to pick them up)."""
    r = rig(recovery_timeout=1.0)
    m = r.migration(FIRST)
    dst = r.pool.client(m["to"])
    dst.set_fault("verify", "fail", mid=r.mid())
    dst.set_fault("rollback", "fail", count=1000, mid=r.mid())
    result = r.run()
    o = result.outcomes[FIRST]
    assert (o.result, o.location) == ("failed", "unknown")
    (err,) = of_type(r.sink.events, "apply_errored", FIRST)
    assert "re-run apply to recover" in err["@message"] and err["outcome"] == "failed"
    for dep in DEPENDENTS:
        assert result.outcomes[dep].result == "skipped"
        assert result.outcomes[dep].error == f"dependency {FIRST} did not migrate"
        assert len(of_type(r.sink.events, "apply_skipped", dep)) == 1
        assert not of_type(r.sink.events, "apply_start", dep)
    assert len([e for e in r.sink.events if e["@level"] == "error"]) == 1, "no cascade"
    assert result.summary_line() == ("Apply finished with problems. 0 migrated, 0 rolled "
                                     "back, 1 failed, 2 skipped; 3 label change(s).")

    dst.clear_faults()
    again = r.run()
    assert again.outcomes[FIRST].result == "migrated"
    assert [e["attempt"] for e in of_type(r.sink.events, "apply_start", FIRST)] == [1]
    assert {d: again.outcomes[d].result for d in DEPENDENTS} == {d: "skipped"
                                                                 for d in DEPENDENTS}
    assert all(e.get("recovered") for e in of_type(r.sink.events, "apply_skipped"))
    assert_each_pod_once(r.pods(), r.facts, {m["pod"]: m["to"]})
    assert unfinished_migrations(r.pool) == []


def test_rollback_policy_lets_dependents_run(rig: RigFactory) -> None:
    r = rig()
    r.pool.client(r.migration()["to"]).set_fault("restore", "fail", mid=r.mid())
    result = r.run()
    assert result.outcomes[FIRST].result == "rolled_back"
    assert {d: result.outcomes[d].result for d in DEPENDENTS} == {d: "migrated"
                                                                 for d in DEPENDENTS}
    assert not result.aborted


def test_abort_stops_starting_new_migrations(rig: RigFactory) -> None:
    r = rig(edit=_on_failure("abort"))
    m = r.migration()
    assert m["on_failure"] == "abort"
    r.pool.client(m["to"]).set_fault("restore", "fail", mid=r.mid())
    result = r.run()
    assert result.aborted and not result.ok
    assert result.outcomes[FIRST].result == "rolled_back"
    for dep in DEPENDENTS:
        assert result.outcomes[dep].result == "skipped"
        assert "aborted" in result.outcomes[dep].error
        assert not of_type(r.sink.events, "apply_start", dep)
        assert len(of_type(r.sink.events, "apply_skipped", dep)) == 1
    (err,) = of_type(r.sink.events, "apply_errored", FIRST)
    assert err["on_failure"] == "abort"
    assert_each_pod_once(r.pods(), r.facts, {})  # nothing moved
    assert unfinished_migrations(r.pool) == []


def test_evict_requests_eviction_and_goes_on(rig: RigFactory) -> None:
    r = rig(edit=_on_failure("evict"))
    m = r.migration()
    r.pool.client(m["from"]).set_fault("checkpoint", "fail", mid=r.mid())
    result = r.run()
    assert (result.outcomes[FIRST].result, result.outcomes[FIRST].location) == (
        "rolled_back", "source")
    assert {d: result.outcomes[d].result for d in DEPENDENTS} == {d: "migrated"
                                                                 for d in DEPENDENTS}
    (err,) = of_type(r.sink.events, "apply_errored", FIRST)
    assert err["on_failure"] == "evict"
    pods = {p.key: p for p in r.case.facts().pods}
    assert pods[m["pod"]].annotations.get("livepolicy.io/eviction-requested") == "true"
    others = [k for k in PLANNED if k != m["pod"]]
    assert all("livepolicy.io/eviction-requested" not in pods[k].annotations for k in others)
    where = dict(PLANNED)
    where[m["pod"]] = m["from"]
    assert_each_pod_once(r.pods(), r.facts, where)


def test_closed_window_defers_and_an_open_one_migrates(rig: RigFactory) -> None:
    closed = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)  # the window is 01:00-02:00 UTC
    r = rig(edit=_window, now=closed)
    assert r.doc["policies"][0]["windows"], "the plan carries the window"
    result = r.run()
    assert {k: o.result for k, o in result.outcomes.items()} == {
        m["id"]: "deferred" for m in r.doc["migrations"]}
    assert result.ok and "3 deferred" in result.summary_line()
    assert not of_type(r.sink.events, "apply_start")
    assert len(of_type(r.sink.events, "apply_skipped")) == 3
    assert all(e["outcome"] == "deferred" for e in of_type(r.sink.events, "apply_skipped"))
    assert_each_pod_once(r.pods(), r.facts, {})
    assert all(not r.pool.client(n).list_migrations()["migrations"] for n in r.pool.agents)

    # Deferral is not journaled as final: once the window opens, a re-run migrates.
    r.options.now = lambda: datetime(2026, 11, 3, 1, 30, tzinfo=UTC)
    again = r.run()
    assert {k: o.result for k, o in again.outcomes.items()} == {
        m["id"]: "migrated" for m in r.doc["migrations"]}
    assert_each_pod_once(r.pods(), r.facts, PLANNED)
