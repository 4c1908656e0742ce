"""SIGKILL the apply process at random points, re-run it until it completes.

Nothing may be lost or duplicated: every pod ends running on exactly one agent, each on its
planned destination, the snapshot agrees with the agents, and the event logs of all the
runs together never show more migrations at once than the plan's budgets allow.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from livepolicy.apply.events import Event
from livepolicy.apply.journal import Journal
from livepolicy.cli.common import load_policies
from livepolicy.planner.budgets import resolve_count

from .conftest import (
    FIRST,
    PLANNED,
    Case,
    RigFactory,
    Strays,
    agents_of,
    assert_each_pod_once,
    of_type,
    parse_events,
    pods_on_agents,
    processes_of,
    unfinished_migrations,
)

MAX_ROUNDS = 10


def _run_and_maybe_kill(case: Case, rng: random.Random, kill: bool,
                        by_time: bool) -> tuple[str, int, str]:
    """One apply; with `kill`, SIGKILL it after a random number of event lines (plus a
    little jitter) or at a random instant (which may fall before any event: while the
    agents start). Returns (stdout, exit status, how it ended)."""
    proc = subprocess.Popen(case.cmd(*case.apply_args(scale=0.01, timeout=5.0)),
                            cwd=case.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None
    err: list[str] = []
    drain = threading.Thread(target=lambda: err.append(stderr.read()))
    drain.start()
    out: list[str] = []
    how = "completed"
    timer: threading.Timer | None = None
    after_lines = 0
    if kill:
        if by_time:
            delay = rng.uniform(0.3, 2.5)
            how = f"killed after {delay:.2f}s"
            timer = threading.Timer(delay, proc.send_signal, (signal.SIGKILL,))
            timer.start()
        else:
            after_lines = rng.randint(1, 28)  # a whole run prints 32 events
            how = f"killed after event {after_lines}"
    jitter = rng.uniform(0, 0.03)
    for line in stdout:
        out.append(line)
        if after_lines and len(out) == after_lines:
            time.sleep(jitter)
            proc.send_signal(signal.SIGKILL)
    code = proc.wait(60)
    if timer is not None:
        timer.cancel()
    drain.join()
    if code != -signal.SIGKILL:
        how = "completed"
    return "".join(out), code, f"{how} (exit {code}){err[0][-2000:] if code > 0 else ''}"


def _budget_violations(runs: list[list[Event]], doc: dict[str, Any], case: Case) -> list[str]:
    """Replay the events of every run in order: a migration holds its budgets from its
    `apply_start` to its `apply_complete`/`apply_errored`, in whichever run that comes (a
    killed run's migrations stay in flight until the next run settles them)."""
    by_id = {m["id"]: m for m in doc["migrations"]}
    policy = {p["name"]: p["budgets"] for p in doc["policies"]}
    facts = case.facts()
    cluster_max = load_policies(str(case.policies)).settings.max_parallel
    in_flight: dict[str, dict[str, Any]] = {}
    peaks: Counter[str] = Counter()
    out = []
    for run_no, events in enumerate(runs):
        for e in events:
            mid = e.get("migration", {}).get("id")
            if e["type"] == "apply_start":
                in_flight[mid] = by_id[mid]
            elif e["type"] in ("apply_complete", "apply_errored"):
                in_flight.pop(mid, None)
            else:
                continue
            held: Counter[str] = Counter()
            for m in in_flight.values():
                held.update([f"out:{m['from']}", f"in:{m['to']}", f"workload:{m['workload']}",
                             f"policy:{m['policy']}", "cluster"])
            for m in in_flight.values():
                b = policy[m["policy"]]
                limits = {
                    f"out:{m['from']}": b["maxOutboundPerNode"],
                    f"in:{m['to']}": b["maxInboundPerNode"],
                    f"policy:{m['policy']}": b["maxParallel"],
                    f"workload:{m['workload']}": resolve_count(
                        b["maxUnavailablePerWorkload"],
                        facts.workload_replicas.get(m["workload"], 1)),
                    "cluster": cluster_max,
                }
                for key, limit in limits.items():
                    if held[key] > limit:
                        out.append(f"run {run_no}: {held[key]} > {limit} on {key} at "
                                   f"{e['@message']!r} (in flight: {sorted(in_flight)})")
            for key, n in held.items():
                peaks[key] = max(peaks[key], n)
    assert peaks["out:a1"] == 2, f"the test never saw parallel migrations: {peaks}"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [7, 1234])
def test_sigkill_at_random_points_then_rerun(case: Case, strays: Strays, seed: int) -> None:
    strays.expected = True  # agents orphaned by a kill run until the next apply stops them
    rng = random.Random(seed)
    doc = case.plan()
    kills = rng.randint(2, 5)
    runs: list[list[Event]] = []
    log: list[str] = []
    for round_no in range(MAX_ROUNDS):
        # The first kill comes after an event (so there always is one); later ones may
        # come at any instant, even while the agents start.
        stdout, code, how = _run_and_maybe_kill(case, rng, kill=round_no < kills,
                                                by_time=round_no > 0 and rng.random() < 0.3)
        log.append(how)
        killed = code == -signal.SIGKILL
        events = parse_events(stdout, complete=not killed)
        if events:
            assert events[0]["type"] == "version", log
        runs.append(events)
        if not killed:
            assert code == 0, log
            break
    else:
        pytest.fail(f"apply did not complete in {MAX_ROUNDS} runs: {log}")
    assert any("killed" in h for h in log)

    final = runs[-1]
    assert final[-1]["type"] == "change_summary", log
    assert final[-1]["changes"]["migrated"] == 3 and final[-1]["@level"] == "info", log
    assert {o["id"]: o["result"] for o in final[-1]["outcomes"]} == {
        m["id"]: "migrated" for m in doc["migrations"]}
    # A migration may have been interrupted (and retried) but committed exactly once.
    completes = Counter(e["migration"]["id"] for run in runs
                        for e in of_type(run, "apply_complete") if not e.get("recovered"))
    assert all(n <= 1 for n in completes.values()), completes

    assert _budget_violations(runs, doc, case) == [], log

    # Stray agents of the killed runs were stopped by the runs after them.
    assert processes_of(case.dir) == []
    facts = case.facts()
    with agents_of(case, scale=0.01) as pool:
        pods = pods_on_agents(pool)
        assert_each_pod_once(pods, facts, PLANNED)
        # The snapshot agrees with the agents, pod by pod.
        assert {p.uid: p.node for p in facts.pods} == {uid: at[0][0] for uid, at in
                                                       pods.items()}
        assert unfinished_migrations(pool) == []
    journal = Journal(next(case.state.glob("runs/*/journal.jsonl")))
    assert {r.mid: r.phase for r in journal.records().values()} == {
        m["id"]: "committed" for m in doc["migrations"]}
    journal.close()
    replan = case.invoke("plan", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                      "--detailed-exitcode")
    assert replan.returncode == 0, replan.stdout


def _is(mid: str, phase: str, attempt_events: int = 0) -> Callable[[Event], bool]:
    seen = [0]

    def match(e: Event) -> bool:
        if e.get("migration", {}).get("id") == mid and e.get("phase") == phase and \
                e["type"] == "apply_progress" and not e.get("recovered"):
            seen[0] += 1
            return seen[0] > attempt_events
        return False
    return match


def test_interrupted_twice_in_the_same_migration_still_completes(rig: RigFactory) -> None:
    """Being interrupted is not a failure: each re-run rolls the interrupted attempt back
    and tries again with a new agent migration id, however often that happens."""
    r = rig()
    r.run_and_die(_is(FIRST, "checkpointing"))
    assert r.journal.records()[FIRST].phase == "checkpointing"
    r.run_and_die(_is(FIRST, "checkpointing"))
    assert (r.journal.records()[FIRST].phase, r.journal.records()[FIRST].attempt) == (
        "checkpointing", 1)
    result = r.run()
    assert result.ok, result.summary_line()
    assert [e["attempt"] for e in of_type(r.sink.events, "apply_start", FIRST)] == [2]
    assert_each_pod_once(r.pods(), r.facts, PLANNED)
    assert unfinished_migrations(r.pool) == []
    src = r.pool.client(r.migration()["from"])
    assert [src.status(r.mid(FIRST, a))["phase"] for a in range(3)] == [
        "rolled_back", "rolled_back", "committed"]


def test_killed_between_journal_and_event_still_reports(rig: RigFactory) -> None:
    """A run that died after journaling `committed` but before its event: the re-run
    reports the migration as complete (a reader of its events sees every migration end)."""
    r = rig()
    r.run_and_die(lambda e: e["type"] == "apply_complete")
    result = r.run()
    assert result.ok
    (done,) = of_type(r.sink.events, "apply_complete", FIRST)
    assert done["recovered"] is True
    assert not of_type(r.sink.events, "apply_start", FIRST)
    assert_each_pod_once(r.pods(), r.facts, PLANNED)
