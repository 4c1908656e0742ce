"""The migration protocol end to end: pod moves once, counter continues, commit point holds."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from livepolicy.agent import AgentError

from .conftest import Agent, Migration, image_files


def _counter(m: Migration, agent: Agent) -> int:
    (pod,) = m.pods(agent)
    return int(pod["counter"])


def test_full_migration_moves_the_pod_once(pair: Migration) -> None:
    m = pair
    m.create_pod()
    time.sleep(0.02)
    m.prepare()
    before = _counter(m, m.src)
    assert before > 0
    final = m.checkpoint()
    assert final["frozen"] is True and final["bytes"] == m.memory
    frozen_at = _counter(m, m.src)
    time.sleep(0.02)
    assert _counter(m, m.src) == frozen_at, "a frozen pod's state must not change"
    assert frozen_at >= before

    sent = m.transfer()
    assert sent["bytes"] == final["image_bytes"]
    restored = m.dst.client.restore(m.mid)
    assert restored["state"] == "running" and restored["counter"] >= frozen_at
    verdict = m.dst.client.verify(m.mid)
    assert verdict["ok"] is True, verdict
    assert verdict["state_sha256"] == final["state_sha256"]  # end-to-end state check

    # Before commit the frozen source copy still exists: the pod is never running twice.
    assert [p["state"] for p in m.pods(m.src)] == ["frozen"]
    assert m.src.client.commit(m.mid)["phase"] == "committed"
    assert m.dst.client.commit(m.mid)["phase"] == "committed"

    assert m.pods(m.src) == []
    (moved,) = m.pods(m.dst)
    assert moved["uid"] == m.uid and moved["state"] == "running"
    time.sleep(0.02)
    after = _counter(m, m.dst)
    assert after > frozen_at, "the counter continues on the destination"
    assert image_files(m.src) == [] and image_files(m.dst) == []
    src_status = m.src.client.status(m.mid)
    assert src_status["phase"] == "committed" and src_status["pod_state"] == "absent"
    assert [h[0] for h in src_status["history"]] == [
        "prepared", "checkpointed", "transferred", "committing", "committed"]


def test_counter_never_goes_backwards(pair: Migration) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    seen = [_counter(m, m.src)]
    m.checkpoint()
    seen.append(_counter(m, m.src))
    m.transfer()
    m.dst.client.restore(m.mid)
    seen.append(_counter(m, m.dst))
    m.dst.client.verify(m.mid)
    m.src.client.commit(m.mid)
    for _ in range(3):
        seen.append(_counter(m, m.dst))
    assert seen == sorted(seen)


def test_iterative_precopy_rounds_shrink(pair: Migration) -> None:
    m = pair
    m.create_pod(dirty_rate=50_000_000)  # D/R = 0.4 on the default 1 Gbit/s link
    m.prepare()
    rounds = [m.src.client.checkpoint(m.mid, round=r, final=False) for r in range(3)]
    assert [r["frozen"] for r in rounds] == [False, False, False]
    assert rounds[0]["bytes"] == m.memory
    assert rounds[1]["bytes"] == rounds[0]["dirty_bytes"] < rounds[0]["bytes"]
    assert rounds[2]["bytes"] == rounds[1]["dirty_bytes"] < rounds[1]["bytes"]
    assert m.pods(m.src)[0]["state"] == "running"  # pre-copy does not freeze
    # a retried round answers the same; an older round is refused
    assert m.src.client.checkpoint(m.mid, round=2, final=False) == rounds[2]
    with pytest.raises(AgentError) as err:
        m.src.client.checkpoint(m.mid, round=1, final=False)
    assert err.value.code == "stale_round"
    final = m.src.client.checkpoint(m.mid, round=3, final=True)
    assert final["frozen"] and final["bytes"] == rounds[2]["dirty_bytes"]
    assert final["bytes"] < m.memory // 10
    with pytest.raises(AgentError) as err:
        m.src.client.checkpoint(m.mid, round=4, final=False)
    assert err.value.status == 409 and err.value.code == "already_frozen"
    m.transfer()
    m.dst.client.restore(m.mid)
    assert m.dst.client.verify(m.mid)["ok"]
    assert m.src.client.status(m.mid)["precopy_rounds"] == 3


def test_precopy_refused_without_dirty_tracking(make_agent: Callable[..., Agent]) -> None:
    m = Migration(make_agent("n1", dirty_tracking=False), make_agent("n2"))
    assert m.src.client.capabilities()["features"]["dirty_tracking"] is False
    m.create_pod()
    m.prepare()
    with pytest.raises(AgentError) as err:
        m.src.client.checkpoint(m.mid, round=0, final=False)
    assert err.value.status == 409 and err.value.code == "dirty_tracking_unavailable"
    assert m.src.client.checkpoint(m.mid, round=0, final=True)["frozen"]  # stop-and-copy works


def test_arm64_defaults_to_no_dirty_tracking(make_agent: Callable[..., Agent]) -> None:
    caps = make_agent("n1", architecture="arm64").client.capabilities()
    assert caps["architecture"] == "arm64" and caps["features"]["dirty_tracking"] is False


STAGES = ["prepared", "checkpointed", "transferred", "restored", "verified"]


@pytest.mark.parametrize("stage", STAGES)
def test_rollback_before_commit_resumes_the_source(pair: Migration, stage: str) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    steps: dict[str, Callable[[], object]] = {
        "checkpointed": m.checkpoint,
        "transferred": m.transfer,
        "restored": lambda: m.dst.client.restore(m.mid),
        "verified": lambda: m.dst.client.verify(m.mid),
    }
    for name in STAGES[1 : STAGES.index(stage) + 1]:
        steps[name]()
    frozen_counter = _counter(m, m.src)
    # destination first, then source: never two running copies
    assert m.dst.client.rollback(m.mid)["phase"] == "rolled_back"
    assert m.src.client.rollback(m.mid)["phase"] == "rolled_back"
    assert m.pods(m.dst) == []
    (pod,) = m.pods(m.src)
    assert pod["state"] == "running"
    time.sleep(0.02)
    assert _counter(m, m.src) > frozen_counter
    assert image_files(m.src) == [] and image_files(m.dst) == []
    # idempotent, and the commit point can no longer be reached
    assert m.src.client.rollback(m.mid)["phase"] == "rolled_back"
    with pytest.raises(AgentError) as err:
        m.src.client.commit(m.mid)
    assert err.value.code == "rolled_back"


def test_rollback_refused_after_commit(pair: Migration) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    m.checkpoint()
    m.transfer()
    m.dst.client.restore(m.mid)
    m.dst.client.verify(m.mid)
    m.src.client.commit(m.mid)
    m.dst.client.commit(m.mid)
    for agent in (m.src, m.dst):
        with pytest.raises(AgentError) as err:
            agent.client.rollback(m.mid)
        assert err.value.status == 409 and err.value.code == "committed"
    assert len(m.pods(m.dst)) == 1


def test_every_step_is_idempotent(pair: Migration) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    m.prepare()
    first = m.checkpoint()
    assert m.src.client.checkpoint(m.mid, round=0, final=True) == first
    t1, t2 = m.transfer(), m.transfer()
    assert (t1["bytes"], t1["sha256"]) == (t2["bytes"], t2["sha256"])
    r1 = m.dst.client.restore(m.mid)
    r2 = m.dst.client.restore(m.mid)
    assert r1["state_sha256"] == r2["state_sha256"] and r2["state"] == "running"
    assert m.dst.client.verify(m.mid)["ok"] and m.dst.client.verify(m.mid)["ok"]
    assert m.src.client.commit(m.mid)["phase"] == m.src.client.commit(m.mid)["phase"] == "committed"
    assert m.dst.client.commit(m.mid)["phase"] == "committed"
    assert m.dst.client.cleanup(m.mid) == {"mid": m.mid, "deleted": False}
    assert len(m.pods(m.dst)) == 1 and m.pods(m.src) == []


def test_commit_refused_before_transfer(pair: Migration) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    m.checkpoint()
    with pytest.raises(AgentError) as err:
        m.src.client.commit(m.mid)
    assert err.value.code == "not_transferred"
    with pytest.raises(AgentError) as err:
        m.dst.client.commit(m.mid)
    assert err.value.code == "not_verified"
    assert m.pods(m.src)[0]["state"] == "frozen"


def test_prepare_conflicts(pair: Migration, make_agent: Callable[..., Agent]) -> None:
    m = pair
    with pytest.raises(AgentError) as err:
        m.prepare()
    assert err.value.status == 404 and err.value.code == "pod_not_found"
    m.create_pod()
    m.prepare()
    other = Migration(m.src, m.dst, mid="m2")
    with pytest.raises(AgentError) as err:
        other.prepare()
    assert err.value.code == "pod_busy" and "m1" in err.value.message
    with pytest.raises(AgentError) as err:
        m.src.client.prepare(m.mid, role="source", pod=m.pod, uid=m.uid, memory_bytes=m.memory,
                             key=Migration(m.src, m.dst).key, peer=m.dst.url)
    assert err.value.code == "key_mismatch"
    with pytest.raises(AgentError) as err:
        m.src.client.prepare(m.mid, role="destination", pod=m.pod, uid=m.uid,
                             memory_bytes=m.memory, key=m.key, peer=m.dst.url)
    assert err.value.code == "migration_conflict"
    with pytest.raises(AgentError) as err:
        m.dst.client.checkpoint(m.mid, round=0, final=True)
    assert err.value.code == "wrong_role"
    # a destination that already runs the pod refuses to receive it
    m3 = Migration(m.src, make_agent("n3"), mid="m3", uid="uid-x", pod="default/x")
    m3.create_pod()
    m3.dst.client.put_pod("default", "x", "uid-x", 1024)
    with pytest.raises(AgentError) as err:
        m3.prepare()
    assert err.value.code == "pod_exists"


def test_put_pod_is_idempotent_per_uid(make_agent: Callable[..., Agent]) -> None:
    c = make_agent().client
    first = c.put_pod("ns", "p", "u1", 1024)
    assert first["created"] is True
    assert c.put_pod("ns", "p", "u1", 1024)["created"] is False
    with pytest.raises(AgentError) as err:
        c.put_pod("ns", "p", "u2", 1024)
    assert err.value.code == "pod_exists"
    assert [p["uid"] for p in c.list_pods()["pods"]] == ["u1"]


def test_restart_keeps_pods_and_migrations_but_not_the_key(
    make_agent: Callable[..., Agent],
) -> None:
    m = Migration(make_agent("n1"), make_agent("n2"))
    m.create_pod()
    m.prepare()
    m.checkpoint()
    m.transfer()
    m.dst.stop()
    dst = make_agent("n2")  # same state dir: a restarted agent
    m.dst = dst
    status = dst.client.status(m.mid)
    assert status["phase"] == "received" and status["key_loaded"] is False
    assert status["image_bytes"] > 0
    with pytest.raises(AgentError) as err:
        dst.client.restore(m.mid)
    assert err.value.code == "key_unavailable"
    dst.client.prepare(m.mid, role="destination", pod=m.pod, uid=m.uid, memory_bytes=m.memory,
                       key=m.key, peer=m.src.url)
    assert dst.client.restore(m.mid)["state"] == "running"
    assert dst.client.verify(m.mid)["ok"]


def test_slow_fault_stretches_the_transfer(pair: Migration) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    m.checkpoint(rounds=1)
    m.src.client.set_fault("transfer", "slow", factor=4)
    slow = m.transfer()
    normal = m.src.client.transfer(m.mid, destination=m.dst.url, token=m.upload, force=True)
    assert slow["duration_ms"] == pytest.approx(4 * normal["duration_ms"], rel=0.01)
