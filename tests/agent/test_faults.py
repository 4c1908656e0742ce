"""Fault injection (sim runtime): fail and hang at every phase, slow links, arming rules."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from livepolicy.agent import AgentClient, AgentError, AgentUnreachable

from .conftest import Agent, Migration, image_files

PHASES = ["prepare", "checkpoint", "transfer", "receive", "restore", "verify", "commit",
          "rollback", "cleanup"]


def _target(m: Migration, phase: str) -> Agent:
    return m.dst if phase in ("receive", "restore", "verify") else m.src


def _step(m: Migration, phase: str, client: AgentClient | None = None) -> object:
    src = client if client is not None and _target(m, phase) is m.src else m.src.client
    dst = client if client is not None and _target(m, phase) is m.dst else m.dst.client
    actions: dict[str, Callable[[], object]] = {
        "prepare": m.prepare,
        "checkpoint": lambda: src.checkpoint(m.mid, round=0, final=True),
        "transfer": lambda: src.transfer(m.mid, destination=m.dst.url, token=m.upload),
        "receive": m.transfer,
        "restore": lambda: dst.restore(m.mid),
        "verify": lambda: dst.verify(m.mid),
        "commit": lambda: src.commit(m.mid),
        "rollback": lambda: src.rollback(m.mid),
        "cleanup": lambda: src.cleanup(m.mid),
    }
    return actions[phase]()


def _phase(agent: Agent, mid: str) -> str:
    try:
        return str(agent.client.status(mid)["phase"])
    except AgentError as exc:
        assert exc.code == "unknown_migration"
        return "unknown"


@pytest.mark.parametrize("phase", PHASES)
def test_fail_fault_changes_nothing_and_a_retry_succeeds(pair: Migration, phase: str) -> None:
    m = pair
    m.run_until(phase)
    target = _target(m, phase)
    before = (_phase(m.src, m.mid), _phase(m.dst, m.mid))
    target.client.set_fault(phase, "fail")
    with pytest.raises(AgentError) as err:
        _step(m, phase)
    if phase == "receive":  # the destination failed; the source reports its answer
        assert err.value.status == 502 and "injected_fault" in err.value.message
    else:
        assert err.value.status == 500 and err.value.code == "injected_fault"
    assert (_phase(m.src, m.mid), _phase(m.dst, m.mid)) == before
    assert target.client.request("GET", "/v1/faults") == {"faults": []}  # count=1 consumed
    _step(m, phase)  # a retry goes through


# phase reached -> phase recorded by the agent that crashes, once the step is done
DONE = {"prepare": "prepared", "checkpoint": "checkpointed", "transfer": "transferred",
        "receive": "received", "restore": "restored", "verify": "verified",
        "commit": "committed", "rollback": "rolled_back"}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("phase", PHASES)
def test_crash_fires_at_every_phase(make_agent: Callable[..., Agent], phase: str,
                                    when: str) -> None:
    """The crash hook (os._exit(3) in a real agent; see test_processes) fires at the right
    moment: before the step changes anything, or after it is done."""
    exits: list[int] = []
    src, dst = make_agent("n1", exits=exits), make_agent("n2", exits=exits)
    m = Migration(src, dst)
    m.run_until(phase)
    target = _target(m, phase)
    before = _phase(target, m.mid)
    target.client.set_fault(phase, "crash", when=when)
    with pytest.raises(AgentError):
        _step(m, phase)
    assert exits == [3]
    if when == "before":
        assert _phase(target, m.mid) == before
    elif phase == "cleanup":  # cleanup deletes images and leaves the phase alone
        assert _phase(target, m.mid) == before and image_files(target) == []
    else:
        assert _phase(target, m.mid) == DONE[phase]


def test_fail_after_means_it_happened(pair: Migration) -> None:
    m = pair
    m.run_until("checkpoint")
    m.src.client.set_fault("checkpoint", "fail", when="after")
    with pytest.raises(AgentError):
        m.checkpoint()
    status = m.src.client.status(m.mid)
    assert status["phase"] == "checkpointed" and status["pod_state"] == "frozen"
    assert m.checkpoint()["frozen"]  # the retry returns the recorded result


@pytest.mark.parametrize("phase", ["checkpoint", "restore", "commit"])
def test_hang_times_out_the_client_then_completes(pair: Migration, phase: str) -> None:
    m = pair
    m.run_until(phase)
    target = _target(m, phase)
    target.client.set_fault(phase, "hang", seconds=0.3)
    impatient = AgentClient(target.url, target.token, timeout=0.1)
    started = time.monotonic()
    with pytest.raises(AgentUnreachable):
        _step(m, phase, impatient)
    assert time.monotonic() - started < 0.28
    expected = {"checkpoint": "checkpointed", "restore": "restored", "commit": "committed"}[phase]
    deadline = time.monotonic() + 5
    while _phase(target, m.mid) != expected:
        assert time.monotonic() < deadline, "the hung step never completed"
        time.sleep(0.02)
    _step(m, phase)  # idempotent retry once the agent answers again


def test_hang_does_not_block_other_requests(pair: Migration) -> None:
    m = pair
    m.run_until("checkpoint")
    m.src.client.set_fault("checkpoint", "hang", seconds=0.4)
    impatient = AgentClient(m.src.url, m.src.token, timeout=0.1)
    with pytest.raises(AgentUnreachable):
        impatient.checkpoint(m.mid, round=0, final=True)
    started = time.monotonic()
    assert m.src.client.health()["status"] == "ok"
    assert m.src.client.status(m.mid)["phase"] == "prepared"
    assert time.monotonic() - started < 0.2


def test_fault_scoped_to_a_migration_and_count(pair: Migration) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    m.src.client.set_fault("checkpoint", "fail", count=2, mid="other")
    m.src.client.set_fault("checkpoint", "fail", count=2, mid=m.mid)
    for _ in range(2):
        with pytest.raises(AgentError):
            m.checkpoint()
    assert m.checkpoint()["frozen"]
    assert [f["mid"] for f in m.src.client.request("GET", "/v1/faults")["faults"]] == ["other"]
    assert m.src.client.clear_faults() == {"cleared": 1}


@pytest.mark.parametrize("body", [
    {"phase": "explode", "mode": "fail"}, {"phase": "commit", "mode": "melt"},
    {"phase": "commit", "mode": "fail", "count": 0}, {"phase": "commit", "mode": "hang",
                                                       "seconds": -1},
    {"phase": "commit", "mode": "slow", "factor": 0.5}, {"phase": "commit", "mode": "fail",
                                                         "when": "during"},
    {"phase": "commit", "mode": "fail", "mid": "../x"},
])
def test_bad_faults_are_rejected(shared_agent: Agent, body: dict[str, object]) -> None:
    with pytest.raises(AgentError) as err:
        shared_agent.client.request("POST", "/v1/faults", body)
    assert err.value.status == 400


def test_slow_precopy_round(pair: Migration) -> None:
    m = pair
    m.create_pod(dirty_rate=10_000_000)
    m.prepare()
    m.src.client.set_fault("checkpoint", "slow", factor=3)
    slow = m.src.client.checkpoint(m.mid, round=0, final=False)
    fast = m.src.client.checkpoint(m.mid, round=1, final=False)
    assert slow["bytes"] == m.memory
    # thrice the time on the link, so thrice the memory dirtied meanwhile
    assert slow["duration_ms"] == pytest.approx(3 * m.memory / 125_000_000 * 1000, rel=0.01)
    assert slow["dirty_bytes"] == pytest.approx(3 * 10_000_000 * m.memory / 125_000_000, rel=0.01)
    assert fast["bytes"] == slow["dirty_bytes"]
