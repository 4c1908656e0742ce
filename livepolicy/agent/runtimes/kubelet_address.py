"""The kubelet runtime keeping a pod's IP address and its TCP connections (opt-in).

Why each step, as measured on the real nodes (docs/kubelet-runtime.md, "IP and TCP"):

- **Source, before the kubelet's checkpoint:** the pod's network namespace drops every
  packet and ARP frame except on loopback (`isolate`). The kubelet's dump leaves the
  container running and a paused pod's kernel still ACKs, so without it the image is behind
  the client's byte stream and the restored socket hangs; at the commit it also keeps the
  kill's FIN or RST from reaching the client. A rollback lifts it (`release`): the client's
  retransmissions reach the source again.
- **Destination, before it creates the copy:** `reserve` tells `livepolicy-ipam` (the CNI
  IPAM of the node, kubelet_ipam.py) to give the copy's sandbox the source's address, so
  CRIU can bind the repaired sockets back (`tcp-established` in the nodes' CRIU config);
  the plugin gates the new sandbox until the copy runs, then the agent lifts the gate
  (`release`, the same table) and announces the address from the copy (`announce`:
  the client's neighbour entry still names the source's MAC, which answers nothing).
- **Source, at the commit:** `moved` makes the plugin keep the address allocated on the
  source's node when the source's sandbox goes; `sweep` hands it back once no pod has it.

The agent enters a pod's network namespace through /proc/PID/ns/net of one of its
containers: host PID namespace, CAP_SYS_ADMIN (setns), CAP_NET_ADMIN (nftables),
CAP_SYS_PTRACE (another container's namespace), CAP_NET_RAW (the copy's gratuitous ARP:
without it clients keep sending to the source's MAC until their neighbour entry
expires, tens of seconds). The chart grants them only with
`agent.kubelet.keepPodAddress.enabled`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from pathlib import Path

from livepolicy.agent.errors import ApiError
from livepolicy.agent.runtimes import kubelet_ipam as ipam
from livepolicy.agent.runtimes import netns

log = logging.getLogger("livepolicy.agent.kubelet")

TABLE = ipam.GATE_TABLE
# The plugin's gate (inbound) plus outbound and ARP: the same table, lifted by `release`.
_ISOLATE = ipam.GATE + f"""\
add chain inet {TABLE} out {{ type filter hook output priority -300; policy drop; }}
add rule inet {TABLE} out oifname "lo" accept
add table arp {TABLE}
flush table arp {TABLE}
add chain arp {TABLE} in {{ type filter hook input priority -300; policy drop; }}
add chain arp {TABLE} out {{ type filter hook output priority -300; policy drop; }}
"""
# `add` first: deleting a table that is not there is an error, adding one is not.
_RELEASE = f"""add table inet {TABLE}
delete table inet {TABLE}
add table arp {TABLE}
delete table arp {TABLE}
"""


class PodAddresses:
    """Network isolation of a pod being moved and the address files of `livepolicy-ipam`."""

    def __init__(self, data_dir: Path, *, nsenter: str = "nsenter", nft: str = "nft",
                 proc: Path = Path("/proc")) -> None:
        self.data_dir = data_dir
        self.nsenter, self.nft, self.proc = nsenter, nft, proc

    def _nft(self, pid: int, script: str, what: str) -> None:
        cmd = [self.nsenter, f"--net={self.proc / str(pid) / 'ns' / 'net'}", "--",
               self.nft, "-f", "-"]
        try:
            res = subprocess.run(cmd, input=script, capture_output=True, text=True,
                                 timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ApiError(500, "network_failed", f"{what}: {exc}") from None
        if res.returncode != 0:
            raise ApiError(500, "network_failed", f"{what}: {' '.join(cmd)}: "
                           f"{(res.stderr or res.stdout).strip()[-400:]}")

    def isolate(self, pid: int) -> None:
        self._nft(pid, _ISOLATE, f"cutting the network of process {pid}'s pod")

    def release(self, pid: int) -> None:
        """Lifts `isolate`; a pod that is gone (the namespace with it) has nothing to lift."""
        if not (self.proc / str(pid)).exists():
            return
        self._nft(pid, _RELEASE, f"restoring the network of process {pid}'s pod")

    def announce(self, pid: int, address: str, ifname: str = "eth0",
                 again: tuple[float, ...] = (0.3, 1.0, 2.0)) -> None:
        """Gratuitous ARP from the copy, now and a few times more in the background: a
        neighbour ignores one that comes within its locktime (1 s) of its last update."""
        ns = self.proc / str(pid) / "ns" / "net"
        try:
            mac = netns.link_mac(ns, ifname)
            netns.send_garp(ns, ifname, address, mac, count=1, quiet=False)
        except OSError as exc:  # clients then find the copy when their entry expires
            log.warning("cannot announce %s from process %d: %s", address, pid, exc)
            return

        def repeat() -> None:
            for delay in again:
                time.sleep(delay)
                netns.send_garp(ns, ifname, address, mac, count=1)

        threading.Thread(target=repeat, daemon=True, name=f"garp-{address}").start()

    def _path(self, kind: str, name: str) -> str:
        return str(self.data_dir / kind / name)

    def reserve(self, namespace: str, pod: str, address: str) -> None:
        ipam.write_file(self._path("reserved", ipam.pod_key(namespace, pod)), address)

    def unreserve(self, namespace: str, pod: str) -> None:
        ipam.remove_file(self._path("reserved", ipam.pod_key(namespace, pod)))

    def moved(self, namespace: str, pod: str, address: str) -> None:
        ipam.write_file(self._path("moved", ipam.pod_key(namespace, pod)),
                        json.dumps({"address": address}))

    def held(self) -> dict[str, str]:
        """Container id -> address, of the addresses kept for pods that moved away."""
        out: dict[str, str] = {}
        held = self.data_dir / "held"
        for entry in ipam.list_dir(str(held)):
            text = ipam.read_file(str(held / entry))
            try:
                address = json.loads(text or "{}").get("address")
            except ValueError:
                address = None
            if isinstance(address, str):
                out[entry] = address
        return out

    def release_held(self, container_id: str) -> None:
        """The plugin gives the address back to the node's IPAM at its next call."""
        log.info("address of sandbox %s is no longer used: released", container_id[:12])
        ipam.write_file(self._path("released", container_id), "")
