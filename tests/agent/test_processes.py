"""Real agent processes: a migration between two of them, crashes at each phase, restarts.

After a crash the engine's recipe is: wait for the agent, read `status`, then either run
the remaining steps again (all idempotent; `prepare` again re-supplies the key) or roll
back (destination first, then source) if the commit point was not reached.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from livepolicy.agent import AgentError, AgentUnreachable
from livepolicy.agent.config import TOKEN_ENV
from livepolicy.agent.main import run_agent

from .conftest import Agent, Migration, image_files


def test_migration_between_two_agent_processes(spawn_agent: Callable[..., Agent]) -> None:
    m = Migration(spawn_agent("n1"), spawn_agent("n2", "--no-dirty-tracking"))
    assert m.src.client.capabilities()["features"]["dirty_tracking"] is True
    assert m.dst.client.capabilities()["features"]["dirty_tracking"] is False
    m.create_pod()
    m.prepare()
    m.src.client.checkpoint(m.mid, round=0, final=False)
    final = m.src.client.checkpoint(m.mid, round=1, final=True)
    m.transfer()
    restored = m.dst.client.restore(m.mid)
    assert restored["counter"] >= m.src.client.status(m.mid)["counter"]
    assert m.dst.client.verify(m.mid)["state_sha256"] == final["state_sha256"]
    m.src.client.commit(m.mid)
    m.dst.client.commit(m.mid)
    assert m.pods(m.src) == [] and [p["state"] for p in m.pods(m.dst)] == ["running"]
    assert image_files(m.src) == [] and image_files(m.dst) == []
    for agent in (m.src, m.dst):  # SIGTERM stops an agent cleanly
        agent.stop(graceful=True)
        assert agent.proc is not None and agent.proc.returncode == 0


def _wait_exit(agent: Agent) -> int:
    assert agent.proc is not None
    return agent.proc.wait(10)


def _finish_forward(m: Migration) -> None:
    """Engine recovery past (or at) the commit point: replay every step; all idempotent."""
    m.prepare()  # re-supplies the key to a restarted agent
    m.src.client.checkpoint(m.mid, round=0, final=True)
    m.transfer()
    m.dst.client.restore(m.mid)
    assert m.dst.client.verify(m.mid)["ok"]
    m.src.client.commit(m.mid)
    m.dst.client.commit(m.mid)


def _roll_back(m: Migration) -> None:
    m.dst.client.rollback(m.mid)
    m.src.client.rollback(m.mid)


# (phase, when, side that crashes, status expected after restart, recovery)
CASES = [
    ("checkpoint", "after", "source", ("checkpointed", "frozen"), "rollback"),
    ("transfer", "after", "source", ("transferred", "frozen"), "forward"),
    ("restore", "after", "destination", ("restored", "running"), "forward"),
    ("commit", "after", "source", ("committed", "absent"), "forward"),
]


@pytest.mark.parametrize("phase,when,side,expected,recovery", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_crash_then_restart_then_recover(
    spawn_agent: Callable[..., Agent],
    make_agent: Callable[..., Agent],
    phase: str,
    when: str,
    side: str,
    expected: tuple[str, str],
    recovery: str,
) -> None:
    crashing = spawn_agent("crashy")
    other = make_agent("steady")
    m = Migration(crashing, other) if side == "source" else Migration(other, crashing)
    m.create_pod()
    order = ["prepare", "checkpoint", "transfer", "restore", "verify", "commit"]
    steps: dict[str, Callable[[], object]] = {
        "prepare": m.prepare,
        "checkpoint": lambda: m.src.client.checkpoint(m.mid, round=0, final=True),
        "transfer": m.transfer,
        "restore": lambda: m.dst.client.restore(m.mid),
        "verify": lambda: m.dst.client.verify(m.mid),
        "commit": lambda: m.src.client.commit(m.mid),
    }
    for step in order[: order.index(phase)]:
        steps[step]()
    counter_before = [p["counter"] for p in m.pods(m.src)]
    crashing.client.set_fault(phase, "crash", when=when)
    with pytest.raises(AgentUnreachable):
        steps[phase]()
    assert _wait_exit(crashing) == 3

    restarted = spawn_agent("crashy")  # same state dir and token
    if side == "source":
        m.src = restarted
    else:
        m.dst = restarted
    status = restarted.client.status(m.mid)
    assert (status["phase"], status["pod_state"]) == expected
    assert status["key_loaded"] is False  # keys are never persisted
    if expected[1] != "absent":  # the node kept its pod across the agent crash
        (pod,) = m.pods(restarted)
        if side == "source":
            assert [pod["counter"]] >= counter_before

    if recovery == "forward":
        _finish_forward(m)
        assert m.pods(m.src) == []
        assert [p["state"] for p in m.pods(m.dst)] == ["running"]
    else:
        _roll_back(m)
        assert m.pods(m.dst) == []
        assert [p["state"] for p in m.pods(m.src)] == ["running"]
        with pytest.raises(AgentError) as err:
            m.src.client.commit(m.mid)
        assert err.value.code == "rolled_back"
    assert image_files(m.src) == [] and image_files(m.dst) == []


@pytest.mark.parametrize("token,message", [(None, "no credential"), ("short", "at least 16")])
def test_agent_refuses_to_start_without_a_good_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    token: str | None, message: str,
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = ["--node", "n1", "--port", "0", "--state-dir", str(tmp_path / "s")]
    if token is not None:
        (tmp_path / "tok").write_text(token)
        args += ["--token-file", str(tmp_path / "tok")]
    assert run_agent(args) == 2
    out = capsys.readouterr()
    assert message in out.err and out.out == ""
    assert not (tmp_path / "s").exists()
