"""The sim agent launcher: agents left by an apply that died are stopped by the next one."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from livepolicy.cli.common import load_facts

from .conftest import BASIC, kill_pool, processes_of, start_pool

NODES = {"a1", "a2"}


def test_next_launch_stops_the_agents_a_dead_apply_left(tmp_path: Path) -> None:
    facts = load_facts(str(BASIC / "cluster.yaml"))
    old = start_pool(tmp_path / "state", facts, nodes=NODES)
    # The apply process dies: its supervisor with it, its agents (own session) live on.
    old._stop.set()
    assert old._watcher is not None
    old._watcher.join()
    ports = {n: a.port for n, a in old.agents.items()}
    left = sorted(a.proc.pid for a in old.agents.values() if a.proc)
    assert sorted(processes_of(tmp_path)) == left

    new = start_pool(tmp_path / "state", facts, nodes=NODES)
    try:
        assert new.leftovers_stopped == 2
        for a in old.agents.values():
            assert a.proc is not None and a.proc.wait(5) == 0, "stopped with SIGTERM"
        assert {n: a.port for n, a in new.agents.items()} == ports, "ports taken back"
        assert all(new.client(n).health()["status"] == "ok" for n in NODES)
        assert sorted(processes_of(tmp_path)) == sorted(
            a.proc.pid for a in new.agents.values() if a.proc)
    finally:
        kill_pool(new)


def test_a_recorded_pid_that_is_not_our_agent_is_left_alone(tmp_path: Path) -> None:
    facts = load_facts(str(BASIC / "cluster.yaml"))
    pool = start_pool(tmp_path / "state", facts, nodes={"a1"})
    kill_pool(pool)
    other = subprocess.Popen(["sleep", "30"])
    try:
        (pool.root / "a1" / "pid").write_text(str(other.pid))
        again = start_pool(tmp_path / "state", facts, nodes={"a1"})
        kill_pool(again)
        assert again.leftovers_stopped == 0 and other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_recorded_port_taken_by_something_else_is_given_up(tmp_path: Path) -> None:
    facts = load_facts(str(BASIC / "cluster.yaml"))
    pool = start_pool(tmp_path / "state", facts, nodes={"a1"})
    port = pool.agents["a1"].port
    kill_pool(pool)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        again = start_pool(tmp_path / "state", facts, nodes={"a1"})
        try:
            assert again.agents["a1"].port != port
            assert again.client("a1").health()["status"] == "ok"
        finally:
            kill_pool(again)
