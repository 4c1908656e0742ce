"""One apply at a time per state directory; a lock left by a killed apply never blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from livepolicy.apply.lock import LockHeld, StateLock, force_unlock

from .conftest import (
    PLANNED,
    Case,
    Strays,
    agents_of,
    assert_each_pod_once,
    parse_events,
    pods_on_agents,
    processes_of,
    unfinished_migrations,
)


def _start_slow_apply(case: Case) -> subprocess.Popen[str]:
    """An apply that takes seconds per migration; returns once it is migrating."""
    proc = subprocess.Popen(case.cmd(*case.apply_args(scale=1.0, timeout=30.0)),
                            cwd=case.dir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["type"] == "apply_start":
            return proc
    raise AssertionError(f"apply ended early ({proc.wait()})")


@pytest.mark.slow
def test_two_applies_at_once_then_the_first_is_killed(case: Case, strays: Strays) -> None:
    strays.expected = True  # the first apply is killed: its agents outlive it
    case.plan()
    first = _start_slow_apply(case)
    try:
        lock_file = case.state / "lock.json"
        info = json.loads(lock_file.read_text())
        assert info["pid"] == first.pid and info["operation"] == "apply"

        second = case.invoke(*case.apply_args())
        assert second.returncode == 1
        message = (f"state is locked by another apply: ID {info['id']}, owner {info['owner']} "
                   f"(pid {first.pid} on {info['host']}), since {info['since']}; if that "
                   f"apply is gone, run `livepolicy force-unlock {info['id']}`")
        assert message in " ".join(second.stderr.split())
        (event,) = parse_events(second.stdout)
        assert event["type"] == "diagnostic" and message in event["@message"]

        held = case.invoke("force-unlock", info["id"])
        assert held.returncode == 1 and "held by a running process" in held.stderr
        assert lock_file.exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert first.stdout is not None
        first.stdout.close()

    # The record of the dead apply's lock stays; force-unlock removes it, by its ID only.
    left = lock_file.read_text()
    wrong = case.invoke("force-unlock", "not-the-id")
    assert wrong.returncode == 1 and "does not match" in wrong.stderr
    unlocked = case.invoke("force-unlock", info["id"])
    assert unlocked.returncode == 0 and unlocked.stdout.strip() == f"lock {info['id']} removed"
    assert not lock_file.exists()
    # ...but it is not needed: the kernel dropped the dead apply's lock, so with its record
    # back in place the next apply still proceeds, recovers the migration the killed one
    # left in flight and finishes the plan.
    lock_file.write_text(left)
    r = case.invoke(*case.apply_args())
    assert r.returncode == 0, r.stdout + r.stderr
    events = parse_events(r.stdout)
    assert events[-1]["changes"]["migrated"] == 3
    assert any(e.get("recovered") for e in events), "the interrupted migration was settled"
    assert not lock_file.exists()
    with agents_of(case) as pool:
        assert_each_pod_once(pods_on_agents(pool), case.facts(), PLANNED)
        assert unfinished_migrations(pool) == []
    nothing = case.invoke("force-unlock", info["id"])
    assert nothing.returncode == 0 and nothing.stdout.strip() == "no lock is recorded"
    assert processes_of(case.dir) == [], "the killed apply's agents were stopped"


def test_state_lock_in_process(tmp_path: Path) -> None:
    a = StateLock(tmp_path / "st")
    a.acquire()
    b = StateLock(tmp_path / "st")
    with pytest.raises(LockHeld) as held:
        b.acquire()
    assert held.value.info["id"] == a.id
    with pytest.raises(ValueError, match="held by a running process"):
        force_unlock(tmp_path / "st", a.id)
    a.release()
    c = StateLock(tmp_path / "st")
    c.acquire()
    assert c._fd is not None
    os.close(c._fd)  # its process died: the kernel drops the lock, the record stays
    with pytest.raises(ValueError, match="does not match"):
        force_unlock(tmp_path / "st", a.id)
    assert force_unlock(tmp_path / "st", c.id) == f"lock {c.id} removed"
    assert force_unlock(tmp_path / "st", a.id) == "no lock is recorded"
    with b:
        assert json.loads((tmp_path / "st" / "lock.json").read_text())["id"] == b.id
    assert not (tmp_path / "st" / "lock.json").exists()


def test_lock_timeout_waits_for_the_holder_then_gives_up_or_proceeds(case: Case) -> None:
    """`--lock-timeout N` (issue 11): a held lock is tried again for N seconds. Without it
    (0, the default) a held lock fails at once, as before."""
    import threading
    import time

    case.plan()
    before = case.cluster.read_text()
    holder = StateLock(case.state)
    holder.acquire()
    try:
        at_once = case.invoke(*case.apply_args())
        assert at_once.returncode == 1 and "waited" not in at_once.stderr
        started = time.monotonic()
        gave_up = case.invoke(*case.apply_args("--lock-timeout", "0.6"))
        waited = time.monotonic() - started
        assert gave_up.returncode == 1
        (event,) = parse_events(gave_up.stdout)
        assert event["@message"].startswith("waited 0.6 s (--lock-timeout) and still: state "
                                            f"is locked by another apply: ID {holder.id}")
        assert waited >= 0.6
        assert case.cluster.read_text() == before
    finally:
        timer = threading.Timer(1.0, holder.release)
        timer.start()
    started = time.monotonic()
    r = case.invoke("apply", "plan.json", "--agents", "sim", "--sim-time-scale", "0.001",
                    "--lock-timeout", "30")
    timer.join()
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started >= 0.5  # it did wait for the holder
    assert "Waiting up to 30 s for the lock: state is locked by another apply: ID " \
        f"{holder.id}" in " ".join(r.stderr.split())
    assert "3 migrated" in r.stderr
