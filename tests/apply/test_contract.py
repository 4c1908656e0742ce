"""The contract: plan --out, apply --agents sim --json, the snapshot converges, re-plan is clean."""

from __future__ import annotations

import json

from livepolicy.apply.journal import Journal

from .conftest import (
    PLANNED,
    Case,
    agents_of,
    assert_each_pod_once,
    of_type,
    parse_events,
    pods_on_agents,
    unfinished_migrations,
)

PHASES = ["preparing", "checkpointing", "transferring", "restoring", "verifying", "committing"]
LABEL = "live.cast.ai/migration-enabled"


def _assert_converged(case: Case, *, subprocess: bool = False) -> None:
    facts = case.facts()
    for pod, node in PLANNED.items():
        p = facts.pod_by_key[pod]
        assert p.node == node, f"{pod} bound to {p.node} in the snapshot"
        assert p.labels.get(LABEL) == "true"
    run = case.cli if subprocess else case.invoke
    replan = run("plan", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                 "--detailed-exitcode")
    assert replan.returncode == 0, replan.stdout + replan.stderr
    assert "No changes." in replan.stdout
    with agents_of(case) as pool:
        assert_each_pod_once(pods_on_agents(pool), facts, PLANNED)
        assert unfinished_migrations(pool) == []
    images = [p for p in (case.state / "sim-agents").rglob("images/*/*") if p.is_file()]
    assert images == [], "checkpoint images left behind"


def test_plan_apply_json_then_replan_reports_no_changes(case: Case) -> None:
    original = case.facts()
    planned = case.cli("plan", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                       "--out", "plan.json")
    assert planned.returncode == 0, planned.stderr
    doc = json.loads(case.plan_file.read_text())
    assert sorted((m["pod"], m["to"]) for m in doc["migrations"]) == sorted(PLANNED.items())

    r = case.cli("apply", "plan.json", "--agents", "sim", "--json", "--report", "report.md")
    assert r.returncode == 0, r.stderr

    events = parse_events(r.stdout)
    assert events[0]["type"] == "version" and events[0]["livepolicy"]
    assert events[-1]["type"] == "change_summary"
    summary = events[-1]
    assert summary["changes"] == {"migrated": 3, "rolled_back": 0, "failed": 0, "skipped": 0,
                                  "deferred": 0}
    # Sim agents are a simulation, and every line says so (issue 10, item 0).
    assert summary["@message"].startswith(
        "[simulated] Apply complete! 3 migrated, 0 rolled back, 0 failed")
    assert all(e["simulated"] is True and e["@message"].startswith("[simulated] ")
               for e in events), [e for e in events if not e.get("simulated")]
    (written,) = of_type(events, "cluster_write")
    assert written["written"] is True and "simulated moves" in written["@message"]
    assert {o["pod"]: (o["result"], o["location"]) for o in summary["outcomes"]} == {
        pod: ("migrated", "destination") for pod in PLANNED}
    assert not of_type(events, "apply_errored") and not of_type(events, "apply_skipped")
    for m in doc["migrations"]:
        mine = [e for e in events if e.get("migration", {}).get("id") == m["id"]]
        assert mine[0]["type"] == "apply_start" and mine[-1]["type"] == "apply_complete"
        assert {e["type"] for e in mine[1:-1]} == {"apply_progress"}
        assert mine[0]["migration"] == {"id": m["id"], "pod": m["pod"], "from": m["from"],
                                        "to": m["to"]}
        phases = [e["phase"] for e in mine if e["type"] == "apply_progress"]
        assert [p for i, p in enumerate(phases) if p not in phases[:i]] == PHASES
        transferring = next(e for e in mine if e.get("phase") == "transferring")
        assert transferring["bytes"] > 0
        assert mine[-1]["outcome"] == "migrated" and mine[-1]["freeze_ms"] > 0
    # Dependencies hold in the stream: m00002 and m00003 start after m00001 completed.
    order = [(e["type"], e["migration"]["id"]) for e in events if "migration" in e]
    done_1 = order.index(("apply_complete", "m00001"))
    assert order.index(("apply_start", "m00002")) > done_1
    assert order.index(("apply_start", "m00003")) > done_1

    report = (case.dir / "report.md").read_text()
    assert "[simulated] Apply complete! 3 migrated" in report
    for pod, node in PLANNED.items():
        assert f"| `{pod}` | a1 | {node} | migrated | destination |" in report

    journal = Journal(next(case.state.glob("runs/*/journal.jsonl")))
    assert {r.mid: r.phase for r in journal.records().values()} == {
        m["id"]: "committed" for m in doc["migrations"]}
    assert journal.events()[-1]["kind"] == "run_end"
    journal.close()

    unchanged = {p.key: p for p in original.pods if p.key not in PLANNED}
    after = case.facts()
    assert all(after.pod_by_key[k] == p for k, p in unchanged.items())
    _assert_converged(case, subprocess=True)

    # Re-applying the same plan is a no-op that reports what the journal says (not stale).
    again = case.invoke("apply", "plan.json", "--agents", "sim", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    events = parse_events(again.stdout)
    assert not of_type(events, "apply_start")
    assert events[-1]["changes"]["migrated"] == 3
    assert {e["migration"]["id"] for e in of_type(events, "apply_complete")} == {
        m["id"] for m in doc["migrations"]}
    assert all(e["recovered"] for e in of_type(events, "apply_complete"))


def test_apply_without_a_plan_file_with_yes(case: Case) -> None:
    r = case.invoke("apply", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                    "--yes", "--agents", "sim", "--sim-time-scale", "0.001")
    assert r.returncode == 0, r.stderr
    assert "[simulated] Apply complete! 3 migrated, 0 rolled back, 0 failed" in r.stderr
    assert "simulate these migrations" not in r.stderr  # --yes: no question
    assert not r.stdout.strip().startswith("{")
    _assert_converged(case)


def test_apply_without_a_plan_file_asks_first(case: Case) -> None:
    before = case.cluster.read_text()
    r = case.invoke("apply", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                    "--agents", "sim", input="no\n")
    assert r.returncode == 0
    assert "3 to migrate" in r.stdout and "Apply cancelled." in r.stderr
    assert case.cluster.read_text() == before
    assert not (case.state / "sim-agents").exists()


def test_json_without_a_plan_file_needs_yes(case: Case) -> None:
    before = case.cluster.read_text()
    r = case.invoke("apply", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                    "--agents", "sim", "--json")
    assert r.returncode == 1
    (event,) = parse_events(r.stdout)
    assert event["type"] == "diagnostic" and event["@level"] == "error"
    assert "--yes" in event["@message"]
    assert case.cluster.read_text() == before
    assert not (case.state / "sim-agents").exists()
    json.dumps(event)


def test_bare_apply_of_a_snapshot_plan_names_the_agents_to_use(case: Case) -> None:
    """A plan made from a snapshot file names no agents: `apply plan.json` alone used to
    default to sim, report "3 migrated" and rewrite the snapshot. Now it is a located
    error, exit 1, before any lock, agent or write."""
    case.plan()
    before = case.cluster.read_text()
    for extra in ((), ("--json",), ("--yes",)):
        r = case.invoke("apply", "plan.json", *extra)
        assert r.returncode == 1, r.stdout + r.stderr
        out = r.stdout + r.stderr
        assert "--agents" in out and "--agents sim" in out and "AGENTS.yaml" in out
        assert "Traceback" not in out and "migrated" not in out
        if extra == ("--json",):
            (event,) = parse_events(r.stdout)
            assert event["type"] == "diagnostic" and event["@level"] == "error"
    assert case.cluster.read_text() == before
    assert not case.state.exists()  # no lock, no journal, no sim agents


def test_simulated_prompt_says_it_simulates(case: Case) -> None:
    r = case.invoke("apply", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                    "--agents", "sim", input="no\n")
    assert r.returncode == 0
    assert "simulate these migrations" in r.stderr and "nothing in the cluster" in r.stderr


def test_a_new_plan_after_an_earlier_simulation_reseeds_the_sim_agents(case: Case) -> None:
    """Issue 11: apply a plan, put the snapshot back, plan anew (another fingerprint) and
    apply in the same state directory. The sim agents kept the pods where the first run
    moved them, so every migration used to roll back ("pod not on this node") with no
    word why. Now the agents follow the snapshot again, and the stream says so."""
    original = case.cluster.read_text()
    case.plan()
    first = case.invoke(*case.apply_args())
    assert first.returncode == 0, first.stdout + first.stderr
    case.cluster.write_text(original)
    case.edit(case.policies, "name: drain-cordoned", "name: drain-cordoned-again")
    second_fp = case.plan()["fingerprint"]
    assert len(list(case.state.glob("runs/*"))) == 1  # not yet run: a new plan
    r = case.invoke(*case.apply_args())
    assert r.returncode == 0, r.stdout + r.stderr
    events = parse_events(r.stdout)
    assert events[0]["type"] == "version"
    (notice,) = of_type(events, "sim_reseeded")
    assert notice["@level"] == "warn" and "reseeded from cluster.yaml" in notice["@message"]
    assert sorted(p.split(":")[0] for p in notice["pods"]) == sorted(PLANNED)
    assert events[-1]["changes"]["migrated"] == 3 and not of_type(events, "apply_errored")
    assert {o["pod"]: o["result"] for o in events[-1]["outcomes"]} == dict.fromkeys(
        PLANNED, "migrated")
    assert any(p.name.startswith(second_fp[:16]) for p in case.state.glob("runs/*"))
    # Human output says it too.
    case.cluster.write_text(original)
    case.edit(case.policies, "name: drain-cordoned-again", "name: drain-cordoned-3")
    case.plan()
    human = case.invoke("apply", "plan.json", "--agents", "sim", "--sim-time-scale", "0.001")
    assert human.returncode == 0, human.stderr
    assert "[simulated] sim agents reseeded from cluster.yaml: 3 pod(s)" in " ".join(
        human.stderr.split())


def test_a_resumed_run_keeps_the_sim_agents_as_they_are(case: Case) -> None:
    """The same plan again (its journal exists): no reseed, the journal's word stands."""
    case.plan()
    assert case.invoke(*case.apply_args()).returncode == 0
    again = case.invoke(*case.apply_args())
    assert again.returncode == 0, again.stdout + again.stderr
    events = parse_events(again.stdout)
    assert not of_type(events, "sim_reseeded")
    assert events[-1]["changes"]["migrated"] == 3


def test_nothing_to_do_without_a_plan_file_asks_nothing(case: Case) -> None:
    """Issue 11: a non-interactive `apply --cluster ...` used to prompt and exit 1 even
    when the fresh plan changes nothing. Now: "No changes.", exit 0, no question, and
    neither agents nor a lock are needed."""
    case.plan()
    assert case.invoke(*case.apply_args()).returncode == 0  # the cluster now converged
    before = case.cluster.read_text()
    runs = sorted(case.state.glob("runs/*"))
    for extra in ((), ("--agents", "sim"), ("--agents", "no-such-agents.yaml")):
        r = case.invoke("apply", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                        *extra)  # stdin is empty: a question would abort with exit 1
        assert r.returncode == 0, r.stdout + r.stderr
        assert "No changes." in r.stdout
        assert "Do you want" not in r.stderr and "Apply cancelled" not in r.stderr
    r = case.invoke("apply", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                    "--json")  # nothing to confirm: --yes is not needed either
    assert r.returncode == 0, r.stdout + r.stderr
    version, summary = parse_events(r.stdout)
    assert version["type"] == "version" and summary["type"] == "change_summary"
    assert summary["@message"].startswith("No changes.")
    assert set(summary["changes"].values()) == {0} and summary["outcomes"] == []
    assert case.cluster.read_text() == before
    assert sorted(case.state.glob("runs/*")) == runs  # no new run, no journal
