"""The lab's life cycle (`lab up`/`down`, even after a crash) and the iterative pre-copy path
of the criu runtime, which this kernel cannot run (no soft-dirty tracking): it is driven
here through a fake CRIU that behaves like one on a kernel that has it."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.criu_pods import query_stats
from livepolicy.lab.lab import LAB_FILE, Lab, LabError
from livepolicy.lab.move import move_pod
from livepolicy.lab.record import Record
from tests.lab.conftest import assert_clean, cli, new_prefix, require_root

pytestmark = pytest.mark.criu

FAKE_CRIU = Path(__file__).with_name("fake_criu.py")


def _lab_processes(lab: Lab) -> list[int]:
    """Live processes recorded by the lab or running in any of its namespaces."""
    pids = []
    for e in Record(lab.root).entries():
        if e["kind"] == "process" and nets.proc_alive(int(e["pid"]), int(e.get("start", 0))):
            pids.append(int(e["pid"]))
    for name in nets.list_netns(f"{lab.prefix}-"):
        pids += nets.pids_in_netns(name)
    return pids


def test_up_and_down_via_cli(tmp_path: Path) -> None:
    require_root()
    prefix = new_prefix()
    lab = Lab(tmp_path / "state")
    res = cli(lab, "lab", "up", "--nodes", "2", "--subnets", "198.18.40.0/24",
              "--archs", "amd64,arm64", "--pods", "1", "--prefix", prefix, "--json")
    try:
        assert res.returncode == 0, res.stderr
        data = json.loads(res.stdout)
        assert [(n["name"], n["architecture"]) for n in data["nodes"]] == [
            ("lab-1", "amd64"), ("lab-2", "arm64")]
        assert data["pods"][0]["ip"].startswith("198.18.40.")
        lab.load()
        assert stat.S_IMODE(lab.root.stat().st_mode) == 0o700
        assert stat.S_IMODE(lab.nodes[0].token_file.stat().st_mode) == 0o600
        assert sorted(nets.list_netns(f"{prefix}-")) == sorted(
            [f"{prefix}-fabric", f"{prefix}-c1", f"{prefix}-n1", f"{prefix}-n2",
             data["pods"][0]["netns"], *_spares(lab)])
        arm = lab.node("lab-2").client().capabilities()
        assert arm["architecture"] == "arm64" and not arm["features"]["dirty_tracking"]
        # an amd64 pod cannot be restored on the pretend arm64 node
        result = move_pod(lab, "default/counter-0", "lab-2")
        assert result.error_code == "architecture_mismatch" and result.rolled_back
        assert lab.find_pod("default/counter-0")[0].name == "lab-1"
    finally:
        down = cli(lab, "lab", "down", "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["leftovers"] == []
    assert_clean(lab, prefix)


def _spares(lab: Lab) -> list[str]:
    """The warm pool's namespaces, once every agent has its two ready."""
    out = []
    for n in lab.nodes:
        path = Path(n.state_dir) / "criu" / "spares.json"

        def ready(path: Path = path) -> bool:
            try:
                spares = json.loads(path.read_text())
            except (OSError, ValueError):
                return False
            return len(spares) == 2 and all(nets.netns_exists(s[0]) for s in spares)

        assert nets.wait_for(ready, 20)
        out += [s[0] for s in json.loads(path.read_text())]
    return out


def test_down_after_a_crash_removes_everything(
        make_lab: Callable[..., Lab], tmp_path: Path) -> None:
    lab = make_lab(nodes=2, subnets=1, pods=1)
    assert move_pod(lab, "default/counter-0", "lab-2").ok  # an agent-made namespace too
    prefix = lab.prefix
    assert _lab_processes(lab)
    # The crash: every agent killed, lab.json lost; only the record file is left.
    for n in lab.nodes:
        os.kill(n.agent_pid, signal.SIGKILL)
    (lab.root / LAB_FILE).unlink()
    pids = _lab_processes(lab)
    res = cli(lab, "lab", "down")
    assert res.returncode == 0, res.stdout + res.stderr
    assert nets.list_netns(f"{prefix}-") == []
    assert not any(nets.proc_alive(p) for p in pids)
    assert not lab.root.exists()
    assert not Path(lab.data["shm"]).exists()
    with pytest.raises(LabError):
        Lab(lab.root).load()


def test_up_refuses_a_second_lab_on_the_same_state(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=1, subnets=1)
    with pytest.raises(LabError, match="already exists"):
        Lab.up(lab.root, nodes=1, subnets=1, prefix=new_prefix())


def test_iterative_precopy_with_a_dirty_tracking_criu(
        make_lab: Callable[..., Lab], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "criu"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_CRIU} \"$@\"\n")
    fake.chmod(0o755)
    calls = tmp_path / "criu-calls.jsonl"
    monkeypatch.setenv("LIVEPOLICY_FAKE_CRIU_LOG", str(calls))
    lab = make_lab(nodes=2, subnets=1, pods=1, criu=fake)
    src = lab.node("lab-1").client()
    assert src.capabilities()["features"]["dirty_tracking"] is True
    _, before = lab.find_pod("default/counter-0")
    stats = query_stats(before.netns, before.ip, before.port)
    assert stats is not None
    result = move_pod(lab, "default/counter-0", "lab-2", precopy_threshold=600 << 10)
    assert result.ok, result.error
    assert result.rounds == 4  # 3 pre-copy rounds (8 MiB, 2 MiB, 512 KiB), then the final
    argv = [json.loads(line)["argv"] for line in calls.read_text().splitlines()]
    pre = [a for a in argv if a[0] == "pre-dump"]
    assert [a[a.index("-D") + 1].rsplit("/", 1)[1] for a in pre] == ["pre-0", "pre-1", "pre-2"]
    assert all("--track-mem" in a for a in pre)
    assert "--prev-images-dir" not in pre[0]
    assert [a[a.index("--prev-images-dir") + 1] for a in pre[1:]] == ["../pre-0", "../pre-1"]
    (dump,) = [a for a in argv if a[0] == "dump"]
    assert dump[dump.index("--prev-images-dir") + 1] == "../pre-2" and "--track-mem" in dump
    assert {"--tcp-established", "--network-lock"} <= set(dump)
    (restore,) = [a for a in argv if a[0] == "restore"]
    assert restore[restore.index("-D") + 1].endswith("/final")  # the chain arrived whole
    node, after = lab.find_pod("default/counter-0")
    assert node.name == "lab-2" and after.token == before.token
    assert after.ip == before.ip and after.alive()


def test_pipe_max_size_raised_only_when_needed_and_put_back(
        make_lab: Callable[..., Lab]) -> None:
    """CRIU's lazy dump needs 4 MiB pipes: `lab up` raises a lower fs.pipe-max-size
    (recorded first) and `lab down` puts the old value back; a high enough one is left."""
    from livepolicy.agent.runtimes.criu_lazy import PIPE_MAX_NEEDED, PIPE_MAX_SIZE

    require_root()
    original = PIPE_MAX_SIZE.read_text().strip()
    others = [n for n in nets.list_netns("") if n.endswith("-fabric")]
    try:
        PIPE_MAX_SIZE.write_text(str(1 << 20))
        lab = make_lab(nodes=1, subnets=1)
        assert int(PIPE_MAX_SIZE.read_text()) == PIPE_MAX_NEEDED
        (entry,) = [e for e in Record(lab.root).entries() if e["kind"] == "sysctl"]
        assert (entry["old"], entry["new"]) == (1 << 20, PIPE_MAX_NEEDED)
        assert lab.down().leftovers == []
        expect = PIPE_MAX_NEEDED if others else 1 << 20  # another lab up keeps it raised
        assert int(PIPE_MAX_SIZE.read_text()) == expect
        PIPE_MAX_SIZE.write_text(str(8 << 20))
        high = make_lab(nodes=1, subnets=1)
        assert [e for e in Record(high.root).entries() if e["kind"] == "sysctl"] == []
        assert high.down().leftovers == []
        assert int(PIPE_MAX_SIZE.read_text()) == 8 << 20
    finally:
        PIPE_MAX_SIZE.write_text(original)
