"""Post-copy through the engine: opt-in by policy, and the commit point before the restore.

With `memoryTransfer: post-copy` (and both agents offering it) the engine journals its
commit point (`committing`, `post_copy: true`) after the state-only transfer and BEFORE
the destination's lazy restore. Faults before it roll back to the source; faults at or
after it (the restore failing, the destination crashing, the apply process dying right
after the record) are rolled forward: every pod still ends running exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from livepolicy.apply.events import Event
from livepolicy.apply.local_agents import LocalSimAgents
from livepolicy.cli.common import load_facts

from .conftest import (
    BASIC,
    FIRST,
    Case,
    Rig,
    RigFactory,
    assert_each_pod_once,
    kill_pool,
    start_pool,
)

POST_COPY = "spec:\n  strategy:\n    memoryTransfer: post-copy\n"


def _opt_in(case: Case) -> None:
    case.edit(case.policies, "spec:\n", POST_COPY)


def _phases(r: Rig, mid: str = FIRST) -> list[tuple[str, dict[str, object]]]:
    return [(e["phase"], e) for e in r.journal.events()
            if e.get("kind") == "phase" and e.get("mid") == mid]


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSimAgents]:
    pool = start_pool(tmp_path_factory.mktemp("postcopy") / "state", load_facts(
        str(BASIC / "cluster.yaml")), nodes={"a1", "a2", "a3"})
    yield pool
    kill_pool(pool)


def test_post_copy_commit_point_is_journaled_before_the_lazy_restore(
        rig: RigFactory, agents: LocalSimAgents) -> None:
    r = rig(pool=agents, edit=_opt_in)
    assert {m["strategy"]["memory_transfer"] for m in r.doc["migrations"]} == {"post-copy"}
    result = r.run()
    assert result.ok and result.count("migrated") == 3
    phases = _phases(r)
    assert [p for p, _ in phases] == ["preparing", "checkpointing", "transferring",
                                      "committing", "committed"]
    assert phases[3][1].get("post_copy") is True
    m = r.migration(FIRST)
    dst = r.pool.client(m["to"]).status(r.mid())
    assert dst["post_copy"] and dst["lazy_started"] and dst["phase"] == "committed"
    assert_each_pod_once(r.pods(), r.facts, r.planned)
    assert r.unfinished() == []


def test_post_copy_falls_back_to_stop_and_copy_where_an_agent_lacks_it(
        rig: RigFactory, tmp_path_factory: pytest.TempPathFactory) -> None:
    pool = LocalSimAgents(tmp_path_factory.mktemp("nolazy") / "state",
                          load_facts(str(BASIC / "cluster.yaml")), time_scale=0.001,
                          post_copy=False)
    pool.start()
    try:
        r = rig(pool=pool, edit=_opt_in)
        result = r.run()
        assert result.ok and result.count("migrated") == 3
        assert "restoring" in [p for p, _ in _phases(r)]
        notes = [e["@message"] for e in r.sink.events if "post-copy unavailable" in
                 e["@message"]]
        assert len(notes) == 3, notes
        assert_each_pod_once(r.pods(), r.facts, r.planned)
    finally:
        kill_pool(pool)


# (phase, side, mode, when, where the pod must end)
CASES = [
    ("checkpoint", "source", "fail", "before", "source"),
    ("transfer", "source", "crash", "before", "source"),
    ("receive", "destination", "fail", "before", "source"),
    ("restore", "destination", "fail", "before", "destination"),
    ("restore", "destination", "crash", "before", "destination"),
    ("restore", "destination", "crash", "after", "destination"),
    ("verify", "destination", "fail", "before", "destination"),
    ("commit", "source", "crash", "before", "destination"),
]


@pytest.mark.parametrize("phase,side,mode,when,ends_on", CASES,
                         ids=[f"{c[0]}-{c[1][:3]}-{c[2]}-{c[3]}" for c in CASES])
def test_post_copy_faults_roll_back_before_and_forward_after_the_commit_point(
        rig: RigFactory, agents: LocalSimAgents, phase: str, side: str, mode: str,
        when: str, ends_on: str) -> None:
    r = rig(pool=agents, edit=_opt_in)
    m = r.impatient(FIRST)
    for n in agents.agents:
        agents.client(n).clear_faults()
    node = m["from"] if side == "source" else m["to"]
    agents.client(node).set_fault(phase, mode, when=when, mid=r.mid())
    result = r.run()
    o = result.outcomes[FIRST]
    expect = ("migrated", "destination") if ends_on == "destination" else \
        ("rolled_back", "source")
    assert (o.result, o.location) == expect, o
    where = r.planned
    if ends_on == "source":
        where[m["pod"]] = m["from"]
        assert "committing" not in [p for p, _ in _phases(r)]
    assert_each_pod_once(r.pods(), r.facts, where)
    assert r.unfinished() == []


def _at(phase: str) -> Callable[[Event], bool]:
    def hit(e: Event) -> bool:
        return e["type"] == "apply_progress" and e.get("phase") == phase and \
            e.get("migration", {}).get("id") == FIRST
    return hit


def test_apply_killed_right_after_the_post_copy_commit_point_rolls_forward(
        rig: RigFactory, agents: LocalSimAgents) -> None:
    r = rig(pool=agents, edit=_opt_in)
    r.run_and_die(at=_at("committing"))
    m = r.migration(FIRST)
    dst = r.pool.client(m["to"]).status(r.mid())
    assert dst["phase"] == "received" and not dst["lazy_started"]  # restore not started
    result = r.run()
    assert result.outcomes[FIRST].result == "migrated" and result.ok
    dst = r.pool.client(m["to"]).status(r.mid())
    assert dst["lazy_started"] and dst["phase"] == "committed"
    assert_each_pod_once(r.pods(), r.facts, r.planned)
    assert r.unfinished() == []


def test_apply_killed_before_the_post_copy_commit_point_rolls_back_and_retries(
        rig: RigFactory, agents: LocalSimAgents) -> None:
    r = rig(pool=agents, edit=_opt_in)
    r.run_and_die(at=_at("transferring"))
    result = r.run()
    assert result.outcomes[FIRST].result == "migrated" and result.ok
    phases = [p for p, _ in _phases(r)]
    assert phases.index("rolled_back") < phases.index("committing")
    assert_each_pod_once(r.pods(), r.facts, r.planned)
    assert r.unfinished() == []
