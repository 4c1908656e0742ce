"""livepolicy-ipam (the CNI IPAM plugin of keepPodAddress) run as containerd runs it, around
the real host-local plugin, and the agent's side of it (`PodAddresses`): the address
files it writes and the network cut it makes in a real network namespace.

The plugin runs under the system's /usr/bin/python3 with -I: the standard library only,
as on a node. host-local is the one scripts/setup-node-testenv.sh builds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livepolicy.agent.runtimes import kubelet_ipam as ipam
from livepolicy.agent.runtimes import netns
from livepolicy.agent.runtimes.kubelet_address import TABLE, PodAddresses
from tests.support.nodeenv import NODE_BIN

SYSTEM_PYTHON = "/usr/bin/python3"


class Cni:
    """The plugin installed in a bin directory next to host-local, with its own state."""

    def __init__(self, tmp: Path) -> None:
        host_local = NODE_BIN / "host-local"
        assert host_local.exists(), f"{host_local}: run scripts/setup-node-testenv.sh"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.plugin = Path(ipam.install(str(self.bin)))
        shutil.copy(host_local, self.bin / "host-local")
        self.data = tmp / "livepolicy"
        self.store = tmp / "host-local"
        self.conf = {
            "cniVersion": "1.0.0", "name": "testnet", "type": "bridge",
            "ipam": {"type": ipam.PLUGIN, "dataDir": str(self.data), "delegate": {
                "type": "host-local", "dataDir": str(self.store),
                "ranges": [[{"subnet": "198.19.250.0/24", "rangeStart": "198.19.250.10",
                             "rangeEnd": "198.19.250.12", "gateway": "198.19.250.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}]}}}
        self.addresses = PodAddresses(self.data)

    def call(self, command: str, cid: str = "", pod: str = "",
             conf: dict[str, Any] | None = None, netns: str = "") -> tuple[int, Any]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
               "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
               "CNI_NETNS": netns or f"/var/run/netns/{cid or 'none'}",
               "CNI_PATH": str(self.bin),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"}
        res = subprocess.run([SYSTEM_PYTHON, "-I", str(self.plugin)], env=env,
                             input=json.dumps(conf or self.conf), capture_output=True,
                             text=True, timeout=60, check=False)
        return res.returncode, json.loads(res.stdout) if res.stdout.strip() else None

    def add(self, cid: str, pod: str) -> str:
        rc, out = self.call("ADD", cid, pod)
        assert rc == 0, out
        (entry,) = out["ips"]
        return str(entry["address"])

    def allocated(self) -> set[str]:
        return {p.name for p in (self.store / "testnet").iterdir()
                if p.name[0].isdigit()} if (self.store / "testnet").exists() else set()


@pytest.fixture()
def cni(tmp_path: Path) -> Cni:
    return Cni(tmp_path)


@pytest.fixture()
def sandbox() -> Iterator[int]:
    """A process in a network namespace of its own: a pod sandbox, for nftables."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    try:
        for _ in range(200):  # until unshare has exec'ed sleep in the new namespace
            if os.readlink(f"/proc/{holder.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.01)
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def tables(pid: int) -> str:
    return subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "nft", "list", "ruleset"],
                          capture_output=True, text=True, check=True).stdout


def test_ordinary_pods_get_the_delegates_addresses(cni: Cni) -> None:
    assert cni.add("c1", "web-1") == "198.19.250.10/24"
    assert cni.add("c2", "web-2") == "198.19.250.11/24"
    assert cni.allocated() == {"198.19.250.10", "198.19.250.11"}
    assert cni.call("DEL", "c1", "web-1")[0] == 0
    assert cni.allocated() == {"198.19.250.11"}


def test_a_reserved_copy_gets_its_sources_address_and_nothing_is_allocated(
        cni: Cni, sandbox: int) -> None:
    # An address of the subnet outside this node's slice: another node's pod.
    cni.addresses.reserve("default", "web-1-0a1b2c3d", "198.19.250.40")
    rc, out = cni.call("ADD", "copy", "web-1-0a1b2c3d", netns=f"/proc/{sandbox}/ns/net")
    assert rc == 0, out
    # The prefix and gateway of the delegate's range holding it, the delegate's routes.
    assert out["ips"] == [{"address": "198.19.250.40/24", "gateway": "198.19.250.1"}]
    assert out["routes"] == [{"dst": "0.0.0.0/0"}]
    assert cni.allocated() == set()
    # The sandbox is gated (inbound dropped but on loopback) until the agent lifts it.
    ruleset = tables(sandbox)
    assert f"table inet {TABLE}" in ruleset and "policy drop" in ruleset, ruleset
    cni.addresses.release(sandbox)
    assert TABLE not in tables(sandbox)
    cni.addresses.unreserve("default", "web-1-0a1b2c3d")
    assert cni.call("DEL", "copy", "web-1-0a1b2c3d")[0] == 0
    assert not (cni.data / "assigned" / "copy").exists()
    assert cni.allocated() == set()


def test_reserved_address_must_lie_in_a_delegate_range(cni: Cni) -> None:
    cni.addresses.reserve("default", "odd", "10.0.0.5")
    rc, out = cni.call("ADD", "c9", "odd")
    assert rc == 1 and out["code"] == 11 and "10.0.0.5" in out["msg"]


def test_a_moved_pods_address_stays_allocated_until_released(cni: Cni) -> None:
    assert cni.add("src", "web-1") == "198.19.250.10/24"
    cni.addresses.moved("default", "web-1", "198.19.250.10")
    assert cni.call("DEL", "src", "web-1")[0] == 0
    assert cni.allocated() == {"198.19.250.10"}  # host-local still holds it
    assert cni.addresses.held() == {"src": "198.19.250.10"}
    assert cni.add("c2", "other") == "198.19.250.11/24"  # a new pod cannot get it
    assert cni.call("DEL", "src", "web-1")[0] == 0  # a repeated DEL changes nothing
    assert "198.19.250.10" in cni.allocated()
    cni.addresses.release_held("src")
    assert cni.call("CHECK", "c2", "other")[0] == 0  # any call hands it back
    assert cni.allocated() == {"198.19.250.11"}
    assert cni.addresses.held() == {}


def test_gc_keeps_the_held_attachments(cni: Cni) -> None:
    cni.add("src", "web-1")
    cni.add("c2", "other")
    cni.addresses.moved("default", "web-1", "198.19.250.10")
    cni.call("DEL", "src", "web-1")
    conf = {**cni.conf, "cniVersion": "1.1.0",
            "cni.dev/valid-attachments": [{"containerID": "c2", "ifname": "eth0"}]}
    rc, out = cni.call("GC", conf=conf)
    assert rc == 0, out
    assert cni.allocated() == {"198.19.250.10", "198.19.250.11"}


def test_version_and_a_clear_error_without_a_delegate(cni: Cni) -> None:
    rc, out = cni.call("VERSION")
    assert rc == 0 and "1.0.0" in out["supportedVersions"]
    bad = {**cni.conf, "ipam": {"type": ipam.PLUGIN}}
    rc, out = cni.call("ADD", "c1", "web-1", conf=bad)
    assert rc == 1 and "ipam.delegate" in out["msg"]


def test_a_reserved_pod_without_a_namespace_is_refused_clearly(cni: Cni) -> None:
    cni.addresses.reserve("default", "copy", "198.19.250.40")
    rc, out = cni.call("ADD", "c1", "copy", netns="/proc/0/ns/net")
    assert rc == 1 and "gating" in out["msg"]
    assert not (cni.data / "assigned" / "c1").exists()


def test_isolate_cuts_a_real_namespace_and_release_restores_it(tmp_path: Path,
                                                                sandbox: int) -> None:
    addresses = PodAddresses(tmp_path)
    addresses.isolate(sandbox)
    addresses.isolate(sandbox)  # idempotent: a retried checkpoint
    ruleset = tables(sandbox)
    assert f"table inet {TABLE}" in ruleset and f"table arp {TABLE}" in ruleset
    assert "policy drop" in ruleset and '"lo" accept' in ruleset
    addresses.release(sandbox)
    addresses.release(sandbox)
    assert TABLE not in tables(sandbox)


def test_release_of_a_pod_that_is_gone_is_a_no_op(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    PodAddresses(tmp_path).release(gone.pid)


def test_announce_sends_from_the_pods_own_link(tmp_path: Path, sandbox: int) -> None:
    """The copy's gratuitous ARP: its MAC read in its namespace, frames sent there (seen
    as transmitted packets on its eth0)."""
    ns = f"--net=/proc/{sandbox}/ns/net"
    for cmd in (["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
                ["ip", "addr", "add", "198.19.250.7/24", "dev", "eth0"],
                ["ip", "link", "set", "peer0", "up"], ["ip", "link", "set", "eth0", "up"]):
        subprocess.run(["nsenter", ns, *cmd], check=True)

    def sent() -> int:
        out = subprocess.run(["nsenter", ns, "ip", "-s", "-j", "link", "show", "eth0"],
                             capture_output=True, text=True, check=True).stdout
        return int(json.loads(out)[0]["stats64"]["tx"]["packets"])

    link = json.loads(subprocess.run(["nsenter", ns, "ip", "-j", "link", "show", "eth0"],
                                     capture_output=True, text=True, check=True).stdout)
    assert netns.link_mac(Path(f"/proc/{sandbox}/ns/net"), "eth0") == link[0]["address"]
    before = sent()
    PodAddresses(tmp_path).announce(sandbox, "198.19.250.7", again=(0.05,))
    deadline = time.monotonic() + 5
    while sent() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sent() >= before + 2
