"""scripts/setup-node-testenv.sh builds the pinned node binaries, and they run here.

The first step of issue 10 (real nodes): kubelet, kube-scheduler and
kube-controller-manager v1.37.2, containerd v2.3.7 (the last line that restores
checkpoint images through CRI CreateContainer), runc v1.5.3 with seccomp, and
the CNI plugins v1.10.0. Each test runs a real binary; the containerd one starts
a real containerd on a private root, state and socket and asks it its version
over gRPC with ctr, the way the agent's kubelet runtime detects it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup-node-testenv.sh"


@pytest.fixture(scope="module")
def node_bin() -> Path:
    out = subprocess.run([str(SETUP)], check=True, capture_output=True, text=True,
                         timeout=3600).stdout
    line = next(x for x in out.splitlines() if x.startswith("node binaries: "))
    return Path(line.removeprefix("node binaries: "))


def _version(path: Path, *args: str) -> str:
    return subprocess.run([str(path), *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def test_second_run_is_cached(node_bin: Path) -> None:
    began = time.monotonic()
    subprocess.run([str(SETUP)], check=True, capture_output=True, timeout=60)
    assert time.monotonic() - began < 5, "an unchanged setup must not rebuild"


def test_kubernetes_binaries_are_the_pinned_version(node_bin: Path) -> None:
    for name in ("kubelet", "kube-scheduler", "kube-controller-manager"):
        assert _version(node_bin / name, "--version").split() == ["Kubernetes", "v1.37.2"]


def test_runc_has_seccomp_and_checkpoint(node_bin: Path) -> None:
    out = _version(node_bin / "runc", "--version")
    assert out.splitlines()[0] == "runc version 1.5.3"
    assert "libseccomp: 2." in out
    assert "checkpoint" in _version(node_bin / "runc", "--help")


def test_cni_plugins_speak_cni_1(node_bin: Path) -> None:
    for name in ("bridge", "host-local", "loopback", "portmap"):
        out = subprocess.run([str(node_bin / name)], env={"CNI_COMMAND": "VERSION"},
                             check=True, capture_output=True, text=True, timeout=30).stdout
        assert "1.0.0" in json.loads(out)["supportedVersions"], name


@pytest.fixture
def containerd(node_bin: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("containerd needs root (CI runs as root)")
    with tempfile.TemporaryDirectory(prefix="livepolicy-ctrd-") as tmp:
        d = Path(tmp)
        sock = d / "containerd.sock"
        (d / "config.toml").write_text(
            f'version = 3\nroot = "{d / "root"}"\nstate = "{d / "state"}"\n'
            f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
            "[plugins.'io.containerd.cri.v1.runtime']\n"
            "  enable_experimental_restore_via_create = true\n"
            "  restrict_oom_score_adj = true\n")
        log = (d / "containerd.log").open("wb")
        proc = subprocess.Popen([str(node_bin / "containerd"), "--config",
                                 str(d / "config.toml")], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                assert proc.poll() is None, (d / "containerd.log").read_text()
                assert time.monotonic() < deadline, "containerd did not listen in 30 s"
                time.sleep(0.1)
            yield sock
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


def test_containerd_runs_and_answers_ctr(node_bin: Path, containerd: Path) -> None:
    out = _version(node_bin / "ctr", "--address", str(containerd), "version")
    server = out.split("Server:", 1)[1]
    assert "Version:  v2.3.7" in server
    plugins = _version(node_bin / "ctr", "--address", str(containerd), "plugins", "ls")
    cri = [x for x in plugins.splitlines() if "io.containerd.cri.v1" in x]
    assert cri and all(x.split()[-1] == "ok" for x in cri), plugins
