"""Fault matrix: each agent phase x fail / hang / crash / link loss, on the agent that runs it.

One migration (m00001: shop/web-5d8f-aaaaa, a1 -> a3) gets the fault; m00002 and m00003
depend on it and run after it settles. Whatever happens, every pod ends running on exactly
one agent: on its source when the fault struck before the commit point (rolled back), on
its destination when it struck after (the engine rolls forward), and the outcomes, the
events and the Markdown report all say which.

Agents are real processes (the production launcher, with its supervisor restarting an agent
that crashed); the engine runs in-process so the faults can be armed before it starts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from livepolicy.agent.client import AgentError
from livepolicy.apply.local_agents import LocalSimAgents
from livepolicy.cli.apply_cmds import write_report
from livepolicy.cli.common import load_facts

from .conftest import (
    BASIC,
    FIRST,
    Case,
    RigFactory,
    assert_each_pod_once,
    kill_pool,
    parse_events,
    start_pool,
    unfinished_migrations,
)

# The faulty migration's calls time out after 1 s (its progressTimeout); the others keep
# the policy's 150 s, so a slow disk on a busy machine cannot make them roll back.
HANG_S = 2.0  # longer than the call timeout: the engine gives up on the call
# The sim link sleeps final_bytes / bandwidth * factor * time_scale: web's final pre-copy
# leftover is 7.6 MB at 5 Gbps (12 ms simulated), so at time scale 0.001 this factor makes
# the transfer take ~0.33 s (within the call timeout) and the next ~2.4 s (past it: "the
# link is gone").
SLOW_OK = 27_000.0
SLOW_LOST = 200_000.0

BEFORE_COMMIT = [("prepare", "source"), ("prepare", "destination"), ("checkpoint", "source"),
                 ("transfer", "source"), ("receive", "destination"),
                 ("restore", "destination"), ("verify", "destination")]
AT_COMMIT = [("commit", "source"), ("commit", "destination")]

# (phase, side, mode, when, factor, where the pod must end)
CASES: list[tuple[str, str, str, str, float | None, str]] = [
    *[(ph, side, mode, "before", None, "source")
      for ph, side in BEFORE_COMMIT for mode in ("fail", "hang", "crash")],
    *[(ph, side, mode, "before", None, "destination")
      for ph, side in AT_COMMIT for mode in ("fail", "hang", "crash")],
    # The step happened, but its answer was lost (error or no answer at all).
    ("prepare", "destination", "hang", "after", None, "source"),
    ("checkpoint", "source", "crash", "after", None, "source"),  # pod frozen on the source
    ("transfer", "source", "crash", "after", None, "source"),
    ("restore", "destination", "fail", "after", None, "source"),  # a copy runs on dest
    ("restore", "destination", "crash", "after", None, "source"),
    ("verify", "destination", "crash", "after", None, "source"),
    ("commit", "source", "crash", "after", None, "destination"),
    ("commit", "destination", "fail", "after", None, "destination"),
    # Link loss: a slow link that still makes it, one so slow the call times out.
    ("transfer", "source", "slow", "before", SLOW_OK, "destination"),
    ("transfer", "source", "slow", "before", SLOW_LOST, "source"),
]


def _id(c: tuple[str, str, str, str, float | None, str]) -> str:
    phase, side, mode, when, factor, _ = c
    link = "-lost" if factor == SLOW_LOST else ("-ok" if factor else "")
    return f"{phase}-{side[:3]}-{mode}{link}" + ("-after" if when == "after" else "")


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSimAgents]:
    """One set of agents (a1, a2, a3) for the whole matrix: each case has pods (namespace,
    uids) and migration ids of its own, and waits until its faults are spent."""
    pool = start_pool(tmp_path_factory.mktemp("matrix") / "state", load_facts(
        str(BASIC / "cluster.yaml")), nodes={"a1", "a2", "a3"})
    yield pool
    kill_pool(pool)


@pytest.mark.parametrize("phase,side,mode,when,factor,ends_on", CASES,
                         ids=[_id(c) for c in CASES])
def test_fault_matrix(rig: RigFactory, agents: LocalSimAgents, tmp_path: Path, phase: str,
                      side: str, mode: str, when: str, factor: float | None,
                      ends_on: str) -> None:
    r = rig(pool=agents)
    m = r.impatient(FIRST)
    node = m["from"] if side == "source" else m["to"]
    for n in agents.agents:
        agents.client(n).clear_faults()
    armed = time.monotonic()
    r.pool.client(node).set_fault(phase, mode, seconds=HANG_S if mode == "hang" else None,
                                  when=when, factor=factor, mid=r.mid())
    result = r.run()

    # -- outcome: on the source (rolled back) or on the destination (migrated) --
    o = result.outcomes[FIRST]
    expect = ("migrated", "destination") if ends_on == "destination" else \
        ("rolled_back", "source")
    assert (o.result, o.location) == expect, o
    if ends_on == "source":
        assert o.error, "a rollback says why"
    # The dependents run once the first one settled (a rollback does not block them).
    assert {k: v.result for k, v in result.outcomes.items() if k != FIRST} == {
        "m00002": "migrated", "m00003": "migrated"}
    assert result.summary_line().startswith(
        "Apply complete! 3 migrated" if ends_on == "destination" else
        "Apply finished with problems. 2 migrated, 1 rolled back, 0 failed")
    if mode == "crash":
        assert r.restarts() == 1, "the supervisor restarted the crashed agent"

    # -- every pod runs exactly once, where the outcome says --
    where = r.planned
    if ends_on == "source":
        where[m["pod"]] = m["from"]
    assert_each_pod_once(r.pods(), r.facts, where)

    # -- the events say the same --
    events = r.sink.events
    assert events[0]["type"] == "version" and events[-1]["type"] == "change_summary"
    closing = [e for e in events if e.get("migration", {}).get("id") == FIRST and
               e["type"] in ("apply_complete", "apply_errored")]
    assert len(closing) == 1, closing
    if ends_on == "source":
        assert closing[0]["type"] == "apply_errored"
        assert closing[0]["outcome"] == "rolled_back" and closing[0]["@level"] == "error"
    else:
        assert closing[0]["type"] == "apply_complete" and closing[0]["outcome"] == "migrated"
    summary = {x["id"]: x for x in events[-1]["outcomes"]}
    assert (summary[FIRST]["result"], summary[FIRST]["location"]) == expect

    # -- and so does the Markdown report --
    report = tmp_path / "report.md"
    write_report(report, r.doc, str(r.case.cluster), result)
    row = next(line for line in report.read_text().splitlines()
               if line.startswith(f"| `{m['pod']}` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == [m["from"], m["to"], expect[0], expect[1]], row

    # -- nothing half-done is left on the agents once the hung calls have woken up --
    if mode == "hang":
        time.sleep(max(0.0, armed + HANG_S + 0.5 - time.monotonic()))
    if not (phase == "prepare" and mode == "hang" and when == "before"):
        # (a prepare that wakes up after its rollback: see test_late_prepare_after_rollback)
        assert r.unfinished() == []
    journal = {rec.mid: rec.phase for rec in r.journal.records().values()}
    assert journal[FIRST] == ("committed" if ends_on == "destination" else "rolled_back")


def test_late_prepare_after_rollback_leaves_nothing_behind(rig: RigFactory) -> None:
    r = rig()
    m = r.impatient(FIRST)
    r.pool.client(m["from"]).set_fault("prepare", "hang", seconds=HANG_S, mid=r.mid())
    result = r.run()
    assert result.outcomes[FIRST].result == "rolled_back"
    time.sleep(HANG_S)
    assert unfinished_migrations(r.pool) == []


def test_rollback_retried_through_transient_errors(rig: RigFactory,
                                                  agents: LocalSimAgents) -> None:
    """A destination that fails its first rollback calls (500) is retried, not abandoned."""
    r = rig(pool=agents)
    m = r.migration(FIRST)
    dst = r.pool.client(m["to"])
    dst.set_fault("verify", "fail", mid=r.mid())
    dst.set_fault("rollback", "fail", count=2, mid=r.mid())
    result = r.run()
    assert result.outcomes[FIRST].result == "rolled_back"
    where = r.planned
    where[m["pod"]] = m["from"]
    assert_each_pod_once(r.pods(), r.facts, where)
    assert r.unfinished() == []


def test_cli_faults_and_report(case: Case) -> None:
    """The same through the command line (hidden --sim-faults), with --report; the
    terminal (not --json) shows what happened too."""
    case.plan()
    (case.dir / "faults.yaml").write_text(
        f"- {{node: a3, phase: restore, mode: crash, when: after, migration: {FIRST}}}\n"
        "- {node: a1, phase: commit, mode: fail, migration: m00003}\n")
    args = [a for a in case.apply_args("--sim-faults", "faults.yaml", "--report", "report.md")
            if a != "--json"]
    r = case.invoke(*args)
    assert r.returncode == 1
    assert "shop/web-5d8f-aaaaa: rolled back to a1" in r.stderr
    assert "shop/db-0: migrated to a2" in r.stderr
    assert "Apply finished with problems. 2 migrated, 1 rolled back, 0 failed" in r.stderr
    report = (case.dir / "report.md").read_text()
    assert "| `shop/web-5d8f-aaaaa` | a1 | a3 | rolled_back | source |" in report
    assert "| `shop/web-5d8f-bbbbb` | a1 | a3 | migrated | destination |" in report
    assert "| `shop/db-0` | a1 | a2 | migrated | destination |" in report
    assert "| rolled back | 1 |" in report and "| migrated | 2 |" in report


def test_cli_rejects_bad_faults_file(case: Case) -> None:
    case.plan()
    (case.dir / "faults.yaml").write_text("- {node: nowhere, phase: restore, mode: fail}\n")
    r = case.invoke(*case.apply_args("--sim-faults", "faults.yaml"))
    assert r.returncode == 1
    (event,) = [e for e in parse_events(r.stdout) if e["type"] == "diagnostic"]
    assert "nowhere" in event["@message"]


def test_agent_error_codes_are_what_the_engine_branches_on(rig: RigFactory,
                                                           agents: LocalSimAgents) -> None:
    """Rollback past the commit point is refused with `committed` on both agents."""
    r = rig(pool=agents)
    result = r.run()
    assert result.ok
    m = r.migration(FIRST)
    for node in (m["from"], m["to"]):
        with pytest.raises(AgentError) as err:
            r.pool.client(node).rollback(r.mid())
        assert err.value.code == "committed"


@pytest.mark.parametrize("verify_takes,ends_on", [(0.0, "source"), (1.5, "destination")])
def test_completion_timeout(rig: RigFactory, agents: LocalSimAgents, verify_takes: float,
                            ends_on: str) -> None:
    """The policy's completion timeout rolls back a migration still on its way; one that
    ran out of time during its last step (verify) is committed, not abandoned mid-run."""
    r = rig(pool=agents)
    m = r.migration(FIRST)
    if verify_takes:
        m["estimate"]["timeout_ms"] = 1000
        r.pool.client(m["to"]).set_fault("verify", "hang", seconds=verify_takes, mid=r.mid())
    else:
        m["estimate"]["timeout_ms"] = 0
    result = r.run()
    o = result.outcomes[FIRST]
    if ends_on == "source":
        assert (o.result, o.location) == ("rolled_back", "source")
        assert "completion timeout" in o.error
    else:
        assert (o.result, o.location) == ("migrated", "destination")
    where = r.planned
    if ends_on == "source":
        where[m["pod"]] = m["from"]
    assert_each_pod_once(r.pods(), r.facts, where)
    assert r.unfinished() == []
