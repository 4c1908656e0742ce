"""Post-copy (lazy pages) in the lab: real CRIU, userfaultfd, the agents' sealed relay.

A pod holding memory it keeps rewriting moves with `memory_transfer: post-copy` while a
client streams request/replies: the freeze covers only the process state, the memory
follows on demand through the agents (CRIU itself never leaves loopback), the client
keeps its connection with no lost or repeated reply and the counter continues. A failure
before the lazy restore (the commit point) resumes the pod on its source from CRIU's own
lazy page server.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from livepolicy.agent.crypto import new_key
from livepolicy.agent.runtimes import criu_lazy
from livepolicy.agent.runtimes import netns as nets
from livepolicy.lab.lab import Lab
from livepolicy.lab.move import move_pod
from tests.lab.conftest import cli, move_policy, restore_after_source_restart
from tests.lab.test_lab_migration import _client, _criu_dirs, _finish, _images

pytestmark = pytest.mark.criu
MiB = 2**20


@pytest.fixture
def pod(lab: Lab, request: pytest.FixtureRequest) -> Iterator[str]:
    name = request.node.name.replace("_", "-")[:40].strip("-").lower()
    rec = lab.create_pod(name, node="lab-1", memory=64 * MiB, dirty_rate=20 * MiB,
                         labels={"test": name})
    yield rec.key
    lab.delete_pod(rec.key)


def _listening(netns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-ltnH"], capture_output=True,
                         text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines()]


def _settled(lab: Lab) -> bool:
    return all(_criu_dirs(lab, n) == [] and _images(lab, n) == [] for n in ("lab-1", "lab-2"))


def test_agents_offer_post_copy_here(lab: Lab) -> None:
    caps = lab.node("lab-1").client().capabilities()
    assert caps["features"]["post_copy"] is True  # userfaultfd works on this kernel
    assert criu_lazy.pipe_max_ok()[0]


def test_post_copy_move_keeps_tcp_session_and_counter(lab: Lab, pod: str) -> None:
    _, before = lab.find_pod(pod)
    c = _client(lab, pod)
    result = move_pod(lab, pod, "lab-2", post_copy=True)
    assert result.ok, result.error
    st = _finish(c)
    node, after = lab.find_pod(pod)
    assert node.name == "lab-2" and after.restored_by == result.mid
    assert (after.ip, after.mac, after.token) == (before.ip, before.mac, before.token)
    assert result.counter is not None and st.last_count is not None
    assert result.counter <= st.last_count
    assert result.memory_bytes < 16 * MiB  # the sealed image held the state, not 64 MiB
    print(f"\npost-copy {pod}: freeze {result.freeze_s * 1000:.0f} ms, client's longest "
          f"wait {st.max_gap_s * 1000:.0f} ms, total {result.total_s * 1000:.0f} ms, steps "
          f"{result.steps_s}")
    # The source's commit waited for the last page; the destination drops what it
    # unpacked once its lazy-pages daemon is done.
    assert nets.wait_for(lambda: _settled(lab), 30, 0.1)
    assert not nets.netns_exists(before.netns)
    # Memory intact: the pod still answers, and moves back (stop-and-copy, every page).
    c = _client(lab, pod)
    assert move_pod(lab, pod, "lab-1").ok
    _finish(c)


def test_post_copy_failure_before_the_lazy_restore_resumes_the_source(
        lab: Lab, pod: str) -> None:
    _, before = lab.find_pod(pod)
    c = _client(lab, pod)
    dst = lab.node("lab-2").client()
    dst.set_fault("receive", "fail", mid="t-lazy-refused")
    try:
        result = move_pod(lab, pod, "lab-2", mid="t-lazy-refused", post_copy=True)
    finally:
        dst.clear_faults()
    assert not result.ok and result.rolled_back, result
    st = _finish(c)
    node, after = lab.find_pod(pod)
    assert node.name == "lab-1" and after.state == "running" and after.alive()
    assert after.token == before.token  # restored from its own lazy dump, not restarted
    assert nets.wait_for(lambda: _settled(lab), 30, 0.1)
    print(f"\nrolled back post-copy {pod}: client's longest wait {st.max_gap_s * 1000:.0f} ms")


def test_lazy_pages_stay_on_loopback_and_the_relay_wants_the_key(lab: Lab, pod: str) -> None:
    _, rec = lab.find_pod(pod)
    node = lab.node("lab-1")
    src = node.client()
    mid = "t-lazy-private"
    src.prepare(mid, role="source", pod=pod, uid=rec.uid, memory_bytes=0, key=new_key(),
                peer=lab.node("lab-2").agent_url, memory_transfer="post-copy")
    src.checkpoint(mid, round=0, final=True)
    try:
        # CRIU's page server: loopback of the pod's namespace only (beside the frozen
        # pod's own service socket).
        listening = _listening(rec.netns)
        assert [a for a in listening if a.startswith("127.0.0.1:")]
        assert [a for a in listening if not a.startswith("127.0.0.1:")] == [
            f"{rec.ip}:{rec.port}"]
        (relay,) = [a for a in _listening(node.netns) if a.startswith(f"{node.ip}:")]
        port = int(relay.rsplit(":", 1)[1])
        # A peer without the key learns nothing and pulls nothing: the relay closes.
        sock = nets.connect_in(lab.node("lab-2").netns, node.ip, port, 5)
        with sock, pytest.raises(criu_lazy.ChannelError):
            criu_lazy.Channel(sock, os.urandom(32), b"guess", server=False)
        status = src.status(mid)
        assert status["lazy_started"] is False and status["pod_state"] == "frozen"
    finally:
        src.rollback(mid)
    assert lab.find_pod(pod)[1].alive()


def test_apply_post_copy_policy_while_client_streams(lab: Lab, pod: str,
                                                     tmp_path: Path) -> None:
    policies = move_policy(tmp_path, pod, "lab-post-copy", "post-copy")
    c = _client(lab, pod)
    res = cli(lab, "apply", "--cluster", "lab", "--policies", str(policies), "--yes",
              "--json", "--state-dir", str(tmp_path / "apply"))
    assert res.returncode == 0, res.stdout + res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [e for e in events if e.get("type") == "apply_complete"], res.stdout
    assert not [e for e in events if "post-copy unavailable" in e.get("@message", "")]
    _finish(c)
    assert lab.find_pod(pod)[0].name == "lab-2"
    journal = [json.loads(line) for p in (tmp_path / "apply").rglob("journal.jsonl")
               for line in p.read_text().splitlines()]
    phases = [j["phase"] for j in journal if j.get("kind") == "phase"]
    assert phases == ["preparing", "checkpointing", "transferring", "committing",
                      "committed"]


def test_source_agent_restart_after_the_lazy_checkpoint(lab: Lab, pod: str) -> None:
    """A restarted source agent serves the lazy dump's pages again (same relay port and
    key, as the sealed image already sent describes them); the move then completes."""
    c = _client(lab, pod)
    mid = "t-lazy-restart"
    src, dst, final = restore_after_source_restart(lab, pod, mid, memory_transfer="post-copy")
    assert nets.wait_for(lambda: bool(dst.verify(mid)["ok"]), 30, 0.2)
    assert dst.verify(mid)["state_sha256"] == final["state_sha256"]
    assert src.status(mid)["lazy_started"] is True  # the pull passed the source's point
    src.commit(mid)
    dst.commit(mid)
    _finish(c)
    assert lab.find_pod(pod)[0].name == "lab-2"
