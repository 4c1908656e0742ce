"""Issue 10 item 5 on real parts: failures of a real migration between two kubelets.

Destination agent killed mid-restore, destination kubelet killed, a restore that CRIU
(through runc and containerd) refuses, apply SIGKILLed before and after the commit point.
In each, the pod ends running exactly once: one non-terminating pod of the Deployment, the
same process (its count goes on, same start token), no pod ever seen but the source, the
final pod and at most one restored copy that is gone again, no checkpoint image left in
either containerd; and apply's journal (--state-dir) says what happened and why.

Nothing is faked: the agent is the chart's, killed with SIGKILL as the kernel would; the
restore is refused by the destination's own CRIU, given a runc.conf it cannot parse.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.nodes.conftest import (
    DESTINATION,
    NAMESPACE,
    SOURCE,
    ApplyProcess,
    PodWatch,
    Workload,
    agent_pod,
    apply,
    assert_exactly_once,
    journal,
    kill_agent,
    phases,
    plan,
    plan_and_apply,
    restarts,
    restored_copies,
    wait_agents_ready,
)
from tests.support.nodeenv import CRIU_RUNC_CONF, NODES, NodeTestEnv

DESTINATION_IP = next(n.ip for n in NODES if n.name == DESTINATION)


def _outcome(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events[-1]["type"] == "change_summary", events[-3:]
    (outcome,) = events[-1]["outcomes"]
    return dict(outcome)


def _start(w: Workload, *requests: str) -> tuple[dict[str, Any], str]:
    """The source pod and its start token, after a few requests."""
    answers = w.ask(*requests)
    return w.pod(), answers[-1].split()[3]


def _rolled_back_records(state: Path) -> list[dict[str, Any]]:
    return [r for r in journal(state) if r.get("kind") == "phase"
            and r["phase"] in ("rolling_back", "rolled_back")]


def test_destination_agent_killed_rolls_back(workload: Workload, tmp_path: Path) -> None:
    """The destination's agent is SIGKILLed while it restores (the copy pod exists, the
    restore call is open): apply's call breaks, it rolls back through the agent the kubelet
    restarts (which removes the copy and its images from its state on the hostPath), the
    source is thawed and goes on; the journal names the destination agent."""
    env = workload.env
    source, token = _start(workload, "REQ 1", "REQ 2")
    plan(env, tmp_path)
    restarted = restarts(agent_pod(env, DESTINATION))
    with PodWatch(workload) as watch:
        run = ApplyProcess(env, tmp_path)
        run.until_phase("restoring")
        deadline = time.monotonic() + 30
        while not restored_copies(env):  # the copy is created: the restore is under way
            assert time.monotonic() < deadline, "no restored copy appeared"
            time.sleep(0.02)
        killed_at = time.monotonic()
        kill_agent(env, DESTINATION)
        events = run.finish()
        took = time.monotonic() - killed_at
    out = _outcome(events)
    assert out["result"] == "rolled_back", out
    assert out["phase"] == "restoring", out
    # The error names the destination agent (its URL) and the call it broke.
    assert f"//{DESTINATION_IP}:" in out["error"] and "/restore" in out["error"], out
    records = _rolled_back_records(tmp_path / "state")
    assert [r["phase"] for r in records] == ["rolling_back", "rolled_back"], records
    assert all(r["error"] == out["error"] and r["reached"] == "restoring" for r in records)
    assert (0, "committing") not in phases(tmp_path / "state")
    # The kubelet restarted the agent container; the copy it had created was deleted.
    assert restarts(agent_pod(env, DESTINATION)) > restarted
    assert any(n != source["metadata"]["name"] for n in watch.seen), watch.seen
    assert_exactly_once(workload, watch, source, SOURCE, token, 3)
    wait_agents_ready(env)
    print(f"\nagent killed mid-restore: rolled back {took:.1f} s after the kill, "
          f"migration {out['duration_ms']} ms; error: {out['error']}")


def test_destination_kubelet_killed_rolls_back(workload: Workload, tmp_path: Path) -> None:
    """No kubelet on the destination: the restored copy never runs, the migration rolls back
    before the commit point and the source goes on (count and token)."""
    source, token = _start(workload, "REQ 1")
    env = workload.env
    env.kill_kubelet(DESTINATION)
    try:
        with PodWatch(workload) as watch:
            _, events = plan_and_apply(env, tmp_path)
    finally:
        env.start_kubelet(DESTINATION)
    out = _outcome(events)
    assert out["result"] == "rolled_back", out
    assert "restore" in out["error"] or "not running" in out["error"], out
    records = _rolled_back_records(tmp_path / "state")
    assert records and all(r["error"] == out["error"] for r in records), records
    # The copy was created in the API (no kubelet ran it) and deleted again by the rollback.
    assert_exactly_once(workload, watch, source, SOURCE, token, 2)
    print(f"\nkubelet killed: rolled back after {out['duration_ms']} ms; {out['error']}")


def test_restore_refused_by_criu_rolls_back(workload: Workload, tmp_path: Path) -> None:
    """The destination's CRIU refuses the restore (its /etc/criu/runc.conf, which runc
    hands to every CRIU it runs, has an option CRIU does not know): containerd fails the
    container's start, the copy never runs, the migration rolls back with containerd's
    words in the journal, and the source goes on. Then, the node mended, the same plan
    applied from a fresh --state-dir moves the pod (the agents do not hold the rolled-back
    migration id against a new apply)."""
    env = workload.env
    source, token = _start(workload, "REQ 1")
    conf = env.node(DESTINATION).host_path("/etc/criu/runc.conf")
    conf.write_text(CRIU_RUNC_CONF + "no-such-criu-option\n")
    try:
        with PodWatch(workload) as watch:
            _, events = plan_and_apply(env, tmp_path)
    finally:
        conf.write_text(CRIU_RUNC_CONF)
    log = env.node(DESTINATION).dir / "conf" / "containerd.log"
    refusals = [line for line in log.read_text(errors="replace").splitlines()
                if "level=error" in line and "criu" in line.lower()]
    print("\n".join(["", "containerd on the destination:", *refusals[:3]]))
    out = _outcome(events)
    assert out["result"] == "rolled_back" and out["phase"] == "restoring", out
    error = out["error"]
    assert "restore_failed" in error, error
    # containerd's refusal, with runc's and CRIU's words, as the kubelet reported it.
    assert "criu" in error.lower(), error
    records = _rolled_back_records(tmp_path / "state")
    assert records and all(r["error"] == error for r in records), records
    pod = assert_exactly_once(workload, watch, source, SOURCE, token, 2)
    print(f"\nrestore refused: rolled back after {out['duration_ms']} ms; {error}")

    # The same plan again, from a fresh state directory: the same agent migration id,
    # a new key. It migrates (was: 409 key_mismatch from the agents).
    with PodWatch(workload) as watch:
        events = apply(env, tmp_path, state="state-again")
    again = _outcome(events)
    assert again["result"] == "migrated", again
    assert_exactly_once(workload, watch, pod, DESTINATION, token, 3)


def _sigkill_apply_at(env: NodeTestEnv, tmp: Path, phase: str) -> list[dict[str, Any]]:
    run = ApplyProcess(env, tmp)
    run.until_phase(phase)
    run.kill()
    return run.events


def test_apply_sigkilled_before_commit_resumes(workload: Workload, tmp_path: Path) -> None:
    """apply SIGKILLed as the transfer starts (the source checkpointed and paused): the
    pod is only paused on its source. apply run again (same --state-dir) rolls the
    interrupted attempt back (the source is thawed, the destination forgets the image) and,
    as an interruption is not a failure, tries again: the pod moves once, as one process."""
    env = workload.env
    source, token = _start(workload, "REQ 1", "REQ 2")
    plan(env, tmp_path)
    state = tmp_path / "state"
    with PodWatch(workload) as watch:
        killed = _sigkill_apply_at(env, tmp_path, "transferring")
        assert killed[-1]["phase"] == "transferring"
        assert phases(state)[-1] == (0, "transferring")  # nothing after it: SIGKILL
        assert [p["metadata"]["name"] for p in workload.pods()] == [source["metadata"]["name"]]
        began = time.monotonic()
        events = apply(env, tmp_path)
        took = time.monotonic() - began
    out = _outcome(events)
    assert out["result"] == "migrated", out
    assert any(e.get("recovered") and e.get("retry") for e in events), events
    records = [r for r in journal(state) if r.get("kind") == "phase"]
    (rolled,) = [r for r in records if r["phase"] == "rolled_back"]
    assert rolled["attempt"] == 0 and rolled["reached"] == "transferring" and rolled["retry"]
    assert rolled["error"] == "interrupted by a previous apply that stopped", rolled
    assert (0, "committing") not in phases(state)
    assert phases(state)[-2:] == [(1, "committing"), (1, "committed")]
    runs = [r["kind"] for r in journal(state) if r["kind"] in ("run_start", "run_end")]
    assert runs == ["run_start", "run_start", "run_end"], runs  # the killed run never ended
    assert_exactly_once(workload, watch, source, DESTINATION, token, 3)
    print(f"\napply killed at transferring: the resume rolled back and migrated in "
          f"{took:.1f} s (migration {out['duration_ms']} ms, freeze {out['freeze_ms']} ms)")


def test_apply_sigkilled_after_commit_resumes(workload: Workload, tmp_path: Path) -> None:
    """apply SIGKILLed at the commit point (journal says committing): apply run again
    finishes the commit (roll forward, the same attempt): the pod is on the destination
    once, the source is gone, nothing rolled back."""
    env = workload.env
    source, token = _start(workload, "REQ 1")
    plan(env, tmp_path)
    state = tmp_path / "state"
    with PodWatch(workload) as watch:
        _sigkill_apply_at(env, tmp_path, "committing")
        assert phases(state)[-1] == (0, "committing")
        began = time.monotonic()
        events = apply(env, tmp_path)
        took = time.monotonic() - began
    out = _outcome(events)
    assert out["result"] == "migrated", out
    assert any(e.get("recovered") and e.get("phase") == "committing" for e in events), events
    assert not _rolled_back_records(state)
    assert phases(state)[-2:] == [(0, "committing"), (0, "committed")]
    assert all(attempt == 0 for attempt, _ in phases(state))
    assert_exactly_once(workload, watch, source, DESTINATION, token, 2)
    print(f"\napply killed at committing: the resume finished the commit in {took:.1f} s")


def test_agents_log_no_probe_noise(chart: NodeTestEnv) -> None:
    """The kubelet's tcpSocket probes (every 10 s and 20 s) hang up on the agents' TLS
    port without a handshake: that is not logged at the chart's INFO level."""
    wait_agents_ready(chart)
    logs = [p for n in NODES for p in chart.node(n.name).host_path("/var/log/pods").glob(
        f"{NAMESPACE}_*agent*/agent/*.log")]
    assert logs
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert "listening on" in text
    noise = [line for line in text.splitlines() if "TLS handshake" in line and "EOF" in line]
    assert not noise, noise[:3]
