"""Live migration in the lab: real processes, real CRIU, a TCP client that never lets go.

Each test starts its own counter pod on the module's lab (lab-1 and lab-2 share subnet a,
lab-3 is alone on subnet b), streams requests to it from a client host of its subnet, and
checks every reply: same connection, no error, no lost or repeated reply, the counter
advancing by exactly one per request across the move.
"""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from livepolicy.agent.client import AgentError
from livepolicy.agent.crypto import new_key
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.criu_pods import read_pods
from livepolicy.lab.client import ClientStats, StreamClient
from livepolicy.lab.lab import Lab
from livepolicy.lab.move import MoveResult, move_pod
from livepolicy.lab.source import LabSource
from tests.lab.conftest import cli, move_policy, restore_after_source_restart

pytestmark = pytest.mark.criu


def _client(lab: Lab, key: str) -> StreamClient:
    node, rec = lab.find_pod(key)
    sub = lab.subnet(node.subnet)
    c = StreamClient(sub["client_netns"], rec.ip, rec.port, interval=0.005).start()
    assert c.wait_replies(20), c.stats.errors
    return c


def _finish(c: StreamClient) -> ClientStats:
    assert c.wait_replies(20, timeout=30), c.stats.errors
    st = c.stop()
    assert st.errors == [], st.errors
    assert st.ok and st.replies == st.sent
    assert st.first_count is not None and st.last_count is not None
    # One reply per request, the counter +1 each time, over the one connection.
    assert st.last_count - st.first_count == st.replies - 1
    return st


@pytest.fixture
def pod(lab: Lab, request: pytest.FixtureRequest) -> Iterator[str]:
    name = request.node.name.replace("_", "-")[:40].strip("-").lower()
    rec = lab.create_pod(name, node="lab-1", labels={"test": name})
    yield rec.key
    lab.delete_pod(rec.key)


def _images(lab: Lab, node: str) -> list[Path]:
    state = Path(lab.node(node).state_dir)
    return [p for p in (state / "images").rglob("*") if p.is_file()]


def _criu_dirs(lab: Lab, node: str) -> list[Path]:
    work = Path(lab.node(node).state_dir) / "criu"
    return [p for p in work.iterdir() if p.name not in ("logs", "spares.json")]


def test_status_lists_nodes_pods_ips_and_agents(lab: Lab, pod: str) -> None:
    res = cli(lab, "lab", "status", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [n["name"] for n in data["nodes"]] == ["lab-1", "lab-2", "lab-3"]
    assert {n["subnet"] for n in data["nodes"][:2]} != {data["nodes"][2]["subnet"]}
    for n in data["nodes"]:
        assert n["agent"]["alive"] and n["agent"]["health"]["runtime"] == "criu"
        assert n["agent"]["url"].startswith("http://127.0.0.1:")
    (p,) = [p for p in data["pods"] if f"{p['namespace']}/{p['name']}" == pod]
    assert p["node"] == "lab-1" and p["state"] == "running"
    assert p["ip"].startswith("198.18.1.")


def _bridge_macs(lab: Lab) -> list[str]:
    return [subprocess.run(["ip", "-n", n.netns, "-br", "link", "show", "br0"], check=True,
                           capture_output=True, text=True).stdout.split()[2] for n in lab.nodes]


def test_live_move_keeps_tcp_session_and_counter(lab: Lab, pod: str) -> None:
    _, before = lab.find_pod(pod)
    macs = _bridge_macs(lab)
    c = _client(lab, pod)
    result = move_pod(lab, pod, "lab-2")
    assert result.ok, result.error
    st = _finish(c)
    # Node bridges keep their own MAC whatever ports come and go (else ARP entries for
    # node IPs go stale and the next page stream stalls for a minute).
    assert _bridge_macs(lab) == macs
    node, after = lab.find_pod(pod)
    assert node.name == "lab-2"
    assert (after.ip, after.mac, after.uid, after.token) == (before.ip, before.mac,
                                                            before.uid, before.token)
    assert after.restored_by == result.mid
    assert result.counter is not None and result.counter <= st.last_count  # type: ignore[operator]
    print(f"\nlab move {pod}: freeze {result.freeze_s * 1000:.0f} ms (agents), client's "
          f"longest wait {st.max_gap_s * 1000:.0f} ms, total {result.total_s * 1000:.0f} ms, "
          f"steps {result.steps_s}")
    # Nothing is left behind: images and CRIU directories are gone on both sides.
    for n in ("lab-1", "lab-2"):
        assert _images(lab, n) == []
        assert _criu_dirs(lab, n) == []
    assert [r.key for r in read_pods(Path(lab.node("lab-1").pods_dir))].count(pod) == 0
    assert nets.netns_exists(after.netns) and not nets.netns_exists(before.netns)


def test_images_are_private_and_deleted(lab: Lab, pod: str) -> None:
    src_node, rec = lab.find_pod(pod)
    src, dst = lab.node("lab-1").client(), lab.node("lab-2").client()
    mid, key = "t-private", new_key()
    src.prepare(mid, role="source", pod=pod, uid=rec.uid, memory_bytes=0, key=key,
                peer=lab.node("lab-2").agent_url)
    dst.prepare(mid, role="destination", pod=pod, uid=rec.uid, memory_bytes=0, key=key,
                peer=src_node.agent_url)
    final = src.checkpoint(mid, round=0, final=True)
    assert final["frozen"] and final["image_bytes"] > 0
    (image,) = _images(lab, "lab-1")
    assert stat.S_IMODE(image.stat().st_mode) == 0o600
    assert stat.S_IMODE(image.parent.stat().st_mode) == 0o700
    assert b"LPCRIU" not in image.read_bytes()  # sealed, not the plaintext archive
    (dump_dir,) = _criu_dirs(lab, "lab-1")
    assert stat.S_IMODE(dump_dir.stat().st_mode) == 0o700
    # The pages wait on the source node's address for a peer that knows the token (which
    # only the sealed image holds): anyone else gets nothing.
    node = lab.node("lab-1")
    ports = [int(line.split()[3].rsplit(":", 1)[1]) for line in subprocess.run(
        ["ip", "netns", "exec", node.netns, "ss", "-ltnH"], capture_output=True, text=True,
        check=True).stdout.splitlines() if f"{node.ip}:" in line]
    assert len(ports) == 1
    for attempt in (b"", b"wrong-token\n"):
        sock = nets.connect_in(lab.node("lab-2").netns, node.ip, ports[0], 5)
        with sock:
            sock.sendall(attempt)
            if not attempt:
                sock.shutdown(socket.SHUT_WR)
            assert sock.recv(100) == b""
    src.transfer(mid, destination=lab.node("lab-2").agent_url, token=lab.node("lab-2").token())
    (received,) = _images(lab, "lab-2")
    assert stat.S_IMODE(received.stat().st_mode) == 0o600
    dst.restore(mid)
    assert _criu_dirs(lab, "lab-2") == []  # the plaintext was unpacked, used, deleted
    assert dst.verify(mid)["ok"]
    src.commit(mid)
    dst.commit(mid)
    for n in ("lab-1", "lab-2"):
        assert _images(lab, n) == []
        assert _criu_dirs(lab, n) == []


def test_failure_before_commit_resumes_the_source(lab: Lab, pod: str) -> None:
    _, before = lab.find_pod(pod)
    c = _client(lab, pod)
    dst = lab.node("lab-2").client()
    dst.set_fault("restore", "fail", mid="t-refused")
    try:
        result = move_pod(lab, pod, "lab-2", mid="t-refused")
    finally:
        dst.clear_faults()
    assert not result.ok and result.rolled_back
    assert result.error_code == "injected_fault"
    st = _finish(c)
    node, after = lab.find_pod(pod)
    assert node.name == "lab-1" and after.state == "running" and after.alive()
    assert after.token == before.token  # restored from its own images, not restarted
    assert all(r.key != pod for r in read_pods(Path(lab.node("lab-2").pods_dir)))
    assert _images(lab, "lab-1") == [] and _images(lab, "lab-2") == []
    assert _criu_dirs(lab, "lab-1") == []
    print(f"\nrolled back {pod}: client's longest wait {st.max_gap_s * 1000:.0f} ms")
    # The pod still moves afterwards, with a new migration id.
    c = _client(lab, pod)
    assert move_pod(lab, pod, "lab-2").ok
    _finish(c)


def test_cross_subnet_move_is_refused_by_the_agent(lab: Lab, pod: str) -> None:
    c = _client(lab, pod)
    result = move_pod(lab, pod, "lab-3")
    assert not result.ok and result.rolled_back
    assert result.error_code == "subnet_mismatch", result.error
    _finish(c)
    node, rec = lab.find_pod(pod)
    assert node.name == "lab-1" and rec.alive()
    assert all(r.key != pod for r in read_pods(Path(lab.node("lab-3").pods_dir)))


def test_non_final_rounds_refused_without_dirty_tracking(lab: Lab, pod: str) -> None:
    src = lab.node("lab-1").client()
    caps = src.capabilities()
    assert caps["runtime"] == "criu" and caps["features"]["tcp_established"]
    assert caps["features"]["dirty_tracking"] is False  # no soft-dirty on this kernel
    _, rec = lab.find_pod(pod)
    src.prepare("t-precopy", role="source", pod=pod, uid=rec.uid, memory_bytes=0,
                key=new_key(), peer=lab.node("lab-2").agent_url)
    with pytest.raises(AgentError) as err:
        src.checkpoint("t-precopy", round=0, final=False)
    assert err.value.code == "dirty_tracking_unavailable"
    src.rollback("t-precopy")
    assert lab.find_pod(pod)[1].alive()


def test_lab_is_a_cluster_snapshot(lab: Lab, pod: str) -> None:
    facts = LabSource(lab.root).read()
    assert facts.info.platform == "eks" and facts.source == "lab"
    by_name = {n.name: n for n in facts.nodes}
    n1, n3 = by_name["lab-1"], by_name["lab-3"]
    assert n1.zone != n3.zone
    assert n1.labels["topology.cast.ai/subnet-id"] != n3.labels["topology.cast.ai/subnet-id"]
    assert n1.labels["provisioner.cast.ai/managed-by"] == "cast.ai"
    assert (n1.architecture, n1.instance_type, n1.image_family) == ("amd64", "m5.large",
                                                                      "FAMILY_AL2023")
    assert n1.runtime == "containerd" and n1.runtime_version.startswith("2.")
    assert n1.ready
    assert any(k.startswith("feature.node.kubernetes.io/cpu-cpuid.") for k in n1.labels)
    p = facts.pod_by_key[pod]
    assert p.node == "lab-1" and p.phase == "Running"


def test_apply_moves_pod_while_client_streams(lab: Lab, pod: str, tmp_path: Path) -> None:
    """`livepolicy apply` (plan, engine, agents) on the lab's snapshot and agents file."""
    policies = move_policy(tmp_path, pod, "lab-move", "stop-and-copy")
    snap = tmp_path / "lab.json"
    res = cli(lab, "lab", "snapshot", "--out", str(snap))
    assert res.returncode == 0, res.stderr
    plan = cli(lab, "plan", "--cluster", "lab", "--policies", str(policies), "--json")
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    (m,) = [m for m in doc["migrations"] if m["pod"] == pod]
    assert (m["from"], m["to"]) == ("lab-1", "lab-2")  # lab-3 is in another subnet
    c = _client(lab, pod)
    res = cli(lab, "apply", "--cluster", str(snap), "--agents", str(lab.root / "agents.yaml"),
              "--policies", str(policies), "--yes", "--json", "--state-dir",
              str(tmp_path / "apply"))
    assert res.returncode == 0, res.stdout + res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    done = [e for e in events if e.get("type") == "apply_complete"]
    assert done, res.stdout
    _finish(c)
    assert lab.find_pod(pod)[0].name == "lab-2"
    assert LabSource(lab.root).read().pod_by_key[pod].node == "lab-2"  # follows the pod


def test_apply_cluster_lab_contract(lab: Lab, pod: str, tmp_path: Path) -> None:
    """The issue's contract: `apply --cluster lab --policies DIR --yes`, while a client
    streams; afterwards a plan of the lab reports no changes."""
    policies = move_policy(tmp_path, pod, "lab-contract", "stop-and-copy")
    c = _client(lab, pod)
    res = cli(lab, "apply", "--cluster", "lab", "--policies", str(policies), "--yes",
              "--state-dir", str(tmp_path / "apply"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 migrated, 0 rolled back, 0 failed" in res.stdout + res.stderr
    _finish(c)
    assert lab.find_pod(pod)[0].name == "lab-2"
    again = cli(lab, "plan", "--cluster", "lab", "--policies", str(policies), "--json")
    assert not [m for m in json.loads(again.stdout)["migrations"] if m["pod"] == pod]


def test_plan_blocks_cross_subnet_moves(lab: Lab, tmp_path: Path) -> None:
    rec = lab.create_pod("alone", node="lab-3")
    try:
        policies = tmp_path / "policies"
        policies.mkdir()
        (policies / "p.yaml").write_text("""\
apiVersion: livepolicy.io/v1alpha1
kind: MigrationPolicy
metadata:
  name: off-lab-3
spec:
  sources:
    names: [lab-3]
""")
        res = cli(lab, "plan", "--cluster", "lab", "--policies", str(policies), "--json")
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert not [m for m in doc["migrations"] if m["pod"] == rec.key]
        (blocked,) = [b for b in doc["blocked"] if b["pod"] == rec.key]
        assert blocked["reasons"][0]["code"] == "PL001"
        assert "PR005" in blocked["reasons"][0]["message"]
    finally:
        lab.delete_pod(rec.key)


def test_source_agent_restart_after_checkpoint(lab: Lab, pod: str) -> None:
    """An agent restart between the freeze and the restore loses nothing: the source serves
    the frozen pod's pages again, as the image it already sealed describes them."""
    c = _client(lab, pod)
    mid = "t-restart"
    src, dst, final = restore_after_source_restart(lab, pod, mid)
    v = dst.verify(mid)
    assert v["ok"] and v["state_sha256"] == final["state_sha256"]
    src.commit(mid)
    dst.commit(mid)
    _finish(c)
    assert lab.find_pod(pod)[0].name == "lab-2"


def _listening_ports(netns: str, ip: str) -> list[int]:
    return [int(line.split()[3].rsplit(":", 1)[1]) for line in subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-ltnH"], capture_output=True, text=True,
        check=True).stdout.splitlines() if f"{ip}:" in line]


def test_page_stream_cut_midway_resumes_the_source(lab: Lab) -> None:
    """The source's dump streams its pages while it runs; a connection reset halfway
    through fails the restore, and the migration rolls back: the source, whose dump
    ended meanwhile, is restored from its own images and the client stays connected."""
    rec = lab.create_pod("cut-stream", node="lab-1", memory=256 * 2**20)
    src_node, dst_node = lab.node("lab-1"), lab.node("lab-2")
    table = "lpcut"
    box: dict[str, MoveResult] = {}
    mover = threading.Thread(target=lambda: box.update(
        result=move_pod(lab, rec.key, "lab-2", mid="t-cut")))
    try:
        c = _client(lab, rec.key)
        mover.start()
        work = Path(dst_node.state_dir) / "criu" / "restore-t-cut"

        def receiving() -> bool:
            return any(p.stat().st_size > 16 * 2**20 for p in work.glob("*/pages-*.img"))

        assert nets.wait_for(receiving, 60, 0.002), "the pages never started to arrive"
        # The destination's node answers its own next packet to the source's page server
        # with a reset: both ends of the stream break, halfway through.
        ports = _listening_ports(src_node.netns, src_node.ip)
        assert len(ports) == 1
        nets.run(["ip", "netns", "exec", dst_node.netns, "nft", "-f", "-"], stdin=(
            f"table inet {table} {{\n chain out {{\n  type filter hook output priority 0;\n"
            f"  ip daddr {src_node.ip} tcp dport {ports[0]} reject with tcp reset\n }}\n}}\n"))
        mover.join(120)
        result = box["result"]
        assert not result.ok and result.rolled_back, result
        assert result.error_code in ("peer_error", "image_corrupt"), result.error
        st = _finish(c)
        print(f"\ncut stream of {rec.key}: {result.error}; client's longest wait "
              f"{st.max_gap_s * 1000:.0f} ms")
        node, after = lab.find_pod(rec.key)
        assert node.name == "lab-1" and after.state == "running" and after.alive()
        assert after.token == rec.token  # restored from its own images, not restarted
        assert all(r.key != rec.key for r in read_pods(Path(dst_node.pods_dir)))
        assert _images(lab, "lab-1") == [] and _images(lab, "lab-2") == []
        assert _criu_dirs(lab, "lab-1") == [] and _criu_dirs(lab, "lab-2") == []
    finally:
        if mover.is_alive():
            mover.join(120)
        nets.run(["ip", "netns", "exec", dst_node.netns, "nft", "delete", "table", "inet",
                  table], check=False)
        lab.delete_pod(rec.key)
