"""Network namespaces, veth links, nftables gates and processes, for the `criu` runtime.

A pod's network is a named network namespace (`/run/netns/NAME`) with one veth link:
`eth0` inside the pod (the pod IP and a MAC derived from it), its peer in the node's
namespace, attached to the node's bridge. Moving a pod to another node recreates that
namespace there with the same IP and MAC; while the checkpoint is being restored the new
`eth0` is *gated* (an nftables table drops inbound TCP on eth0, never on loopback, where
CRIU's restore runs a TCP self-test), so a client's retransmission never meets a closed
port and gets a reset.

Everything here shells out to `ip` and `nft` (iproute2, nftables) or, for what must be
fast (sockets, sysctls, a gratuitous ARP), runs a short function in a thread that
entered the namespace with setns(2): a network namespace is a per-thread attribute, and a
socket stays in the namespace it was created in.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
GATE_TABLE = "lpgate"
IFNAME_MAX = 15

T = TypeVar("T")


class NetError(RuntimeError):
    """A network-plumbing command failed (the message names the command and its output)."""


def run(cmd: list[str], *, stdin: str | None = None, timeout: float = 30.0,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetError(f"{' '.join(cmd)}: {exc}") from None
    if check and res.returncode != 0:
        out = (res.stderr or res.stdout).strip()
        raise NetError(f"{' '.join(cmd)} failed (rc={res.returncode}): {out}")
    return res


def ip_batch(lines: Iterable[str], netns: str | None = None) -> None:
    """Several `ip` commands in one process (`ip -batch -`), optionally in a namespace."""
    cmd = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    run(cmd, stdin="".join(f"{line}\n" for line in lines))


def netns_path(name: str) -> Path:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad network namespace name {name!r}")
    return NETNS_DIR / name


def netns_exists(name: str) -> bool:
    return netns_path(name).exists()


def netns_add(name: str) -> None:
    run(["ip", "netns", "add", name])


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(netns_path(name)).st_ino
    except OSError:
        return None


def list_netns(prefix: str) -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


# -- processes -----------------------------------------------------------------------------
def proc_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live, non-zombie `pid`; None otherwise.

    (pid, start time) names one process for good: a pid can be reused, the pair cannot.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def proc_alive(pid: int, start_time: int | None = None) -> bool:
    if pid <= 0:
        return False
    now = proc_start_time(pid)
    return now is not None and (start_time is None or start_time in (0, now))


def pids_in_netns(name: str) -> list[int]:
    """Every live process whose network namespace is `name`."""
    inode = netns_inode(name)
    if inode is None:
        return []
    want = f"net:[{inode}]"
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "net") == want:
                out.append(int(entry.name))
        except OSError:
            continue
    return [p for p in out if proc_alive(p)]


def kill_and_wait(pids: Iterable[int], timeout: float = 5.0) -> None:
    """SIGKILL `pids` and wait until they are gone (zombies count as gone)."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while proc_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        reap(pid)


def reap(pid: int) -> None:
    """Collect `pid` if it is our own exited child (no effect otherwise)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def netns_delete(name: str) -> bool:
    """Kill every process in the namespace and delete it; False if it did not exist."""
    if not netns_exists(name):
        return False
    for _ in range(3):
        pids = pids_in_netns(name)
        if not pids:
            break
        kill_and_wait(pids)
    run(["ip", "netns", "delete", name], check=False)
    return not netns_exists(name) or _force_unlink(name)


def _force_unlink(name: str) -> bool:
    path = netns_path(name)
    with contextlib.suppress(OSError):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
        path.unlink()
    return not path.exists()


# -- running code inside a namespace ---------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def in_netns(name: str | Path, fn: Callable[[], T]) -> T:
    """Run `fn()` in a fresh thread that entered network namespace `name` (a name under
    /run/netns, or a namespace file such as /proc/PID/ns/net); its result.

    Sockets `fn` creates stay in that namespace, so the caller can go on using them.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            path = name if isinstance(name, Path) else netns_path(name)
            target_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target_fd)
                try:
                    box["value"] = fn()
                finally:
                    _setns(own)
            finally:
                os.close(target_fd)
        except BaseException as exc:
            box["error"] = exc
        finally:
            os.close(own)

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def socket_in(name: str, family: int = socket.AF_INET,
              kind: int = socket.SOCK_STREAM) -> socket.socket:
    return in_netns(name, lambda: socket.socket(family, kind))


def connect_in(name: str, ip: str, port: int, timeout: float) -> socket.socket:
    sock = socket_in(name)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


def write_sysctls(name: str, values: dict[str, str]) -> None:
    """Write /proc/sys entries as seen from inside the namespace (net.* are per namespace)."""

    def write() -> None:
        for key, value in values.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            with contextlib.suppress(FileNotFoundError):
                path.write_text(value)

    in_netns(name, write)


NO_IPV6 = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}


# -- addresses -----------------------------------------------------------------------------
def mac_for_ip(ip: str) -> str:
    """A stable, locally administered MAC for a pod IP (the same on every node)."""
    b = ipaddress.IPv4Address(ip).packed
    return f"02:4c:50:{b[1]:02x}:{b[2]:02x}:{b[3]:02x}"


def ip_in_subnet(ip: str, cidr: str) -> bool:
    try:
        return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(cidr, strict=False)
    except ValueError:
        return False


SIOCGIFFLAGS = 0x8913
IFF_RUNNING = 0x40


def link_running(netns: str, ifname: str) -> bool:
    """Is `ifname` operationally up (carrier) in `netns`? Frames sent before are dropped."""

    def flags() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH14x", ifname.encode(), 0))
        return int(struct.unpack("16sH14x", raw)[1])

    try:
        return bool(in_netns(netns, flags) & IFF_RUNNING)
    except OSError:
        return False


SIOCGIFHWADDR = 0x8927


def link_mac(netns: str | Path, ifname: str) -> str:
    def read() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            return fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("256s", ifname.encode()))

    return ":".join(f"{b:02x}" for b in in_netns(netns, read)[18:24])


def send_garp(netns: str | Path, ifname: str, ip: str, mac: str, count: int = 2, *,
              quiet: bool = True) -> None:
    """Gratuitous ARP from `ifname`: bridges relearn where `mac` lives, neighbours its IP.
    Best effort unless `quiet` is False (a raw socket needs CAP_NET_RAW)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    addr = ipaddress.IPv4Address(ip).packed
    frame = (b"\xff" * 6 + hw + struct.pack("!H", 0x0806)
             + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + addr + b"\x00" * 6 + addr)

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            for _ in range(count):
                s.send(frame)

    try:
        in_netns(netns, send)
    except OSError:
        if not quiet:
            raise


# -- gates ---------------------------------------------------------------------------------
def gate_rules(ifname: str = "eth0") -> str:
    return (f"table inet {GATE_TABLE} {{\n"
            "  chain input {\n"
            "    type filter hook input priority -300; policy accept;\n"
            f'    iifname "{ifname}" meta l4proto tcp drop\n'
            "  }\n"
            "}\n")


def gate_close(netns: str, ifname: str = "eth0") -> None:
    """Drop inbound TCP on `ifname` (not on loopback) in `netns`."""
    run(["nsenter", f"--net={netns_path(netns)}", "nft", "-f", "-"], stdin=gate_rules(ifname))


def gate_open(netns: str) -> None:
    run(["nsenter", f"--net={netns_path(netns)}", "nft", "delete", "table", "inet",
         GATE_TABLE], check=False)


def nft_tables(netns: str) -> list[str]:
    res = run(["nsenter", f"--net={netns_path(netns)}", "nft", "list", "tables"], check=False)
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


# -- a pod's network -----------------------------------------------------------------------
@dataclass(frozen=True)
class PodNet:
    """Where a pod's network lives on one node."""

    netns: str  # the pod's namespace
    node_netns: str  # the node's namespace, holding `bridge`
    bridge: str
    host_veth: str  # the node-side end of the pod's veth pair
    ip: str
    prefix: int
    mac: str
    ifname: str = "eth0"


def create_pod_net(net: PodNet, *, gated: bool) -> None:
    """Create the pod's namespace and link, attached to the node bridge and up.

    With `gated`, inbound TCP on the pod interface is dropped until `gate_open`. On any
    failure what was created is removed again.
    """
    if len(net.host_veth) > IFNAME_MAX:
        raise ValueError(f"interface name {net.host_veth!r} is too long")
    if netns_exists(net.netns):
        raise NetError(f"network namespace {net.netns} already exists")
    netns_add(net.netns)
    try:
        write_sysctls(net.netns, NO_IPV6)
        run(["ip", "-n", net.node_netns, "link", "add", net.host_veth, "type", "veth", "peer",
             "name", net.ifname, "netns", net.netns])
        ip_batch([
            "link set lo up",
            f"link set {net.ifname} address {net.mac}",
            f"addr add {net.ip}/{net.prefix} dev {net.ifname}",
        ], net.netns)
        if gated:
            gate_close(net.netns, net.ifname)
        ip_batch([f"link set {net.ifname} up"], net.netns)
        ip_batch([f"link set {net.host_veth} master {net.bridge}",
                  f"link set {net.host_veth} up"], net.node_netns)
    except BaseException:
        delete_pod_net(net)
        raise
    announce(net)


def create_spare_net(netns: str, node_netns: str, host_veth: str,
                     ifname: str = "eth0") -> None:
    """A pod namespace made ahead of need: loopback up, IPv6 off, a veth pair whose node
    end is down and unattached, and the gate closed. `activate_pod_net` gives it an
    address and attaches it in two quick commands."""
    if len(host_veth) > IFNAME_MAX:
        raise ValueError(f"interface name {host_veth!r} is too long")
    netns_add(netns)
    try:
        write_sysctls(netns, NO_IPV6)
        run(["ip", "-n", node_netns, "link", "add", host_veth, "type", "veth", "peer", "name",
             ifname, "netns", netns])
        ip_batch(["link set lo up"], netns)
        gate_close(netns, ifname)
    except BaseException:
        netns_delete(netns)
        run(["ip", "-n", node_netns, "link", "del", host_veth], check=False)
        raise


def activate_pod_net(net: PodNet) -> None:
    """Address a spare namespace as `net` and attach it to the bridge (gate still closed)."""
    ip_batch([f"link set {net.ifname} address {net.mac}",
              f"addr add {net.ip}/{net.prefix} dev {net.ifname}",
              f"link set {net.ifname} up"], net.netns)
    ip_batch([f"link set {net.host_veth} master {net.bridge}",
              f"link set {net.host_veth} up"], net.node_netns)
    announce(net)


def announce(net: PodNet, *, wait: float = 1.0, repeat: tuple[float, ...] = (0.05, 0.3)) -> None:
    """Tell the bridges and neighbours where the pod's MAC and IP are now: a gratuitous ARP
    once the link carries frames, repeated a little later (in the background) in case a
    bridge was still settling."""
    wait_for(lambda: link_running(net.netns, net.ifname), wait, 0.002)
    send_garp(net.netns, net.ifname, net.ip, net.mac)
    if repeat:
        def again() -> None:
            for delay in repeat:
                time.sleep(delay)
                if not netns_exists(net.netns):
                    return
                send_garp(net.netns, net.ifname, net.ip, net.mac, count=1)

        threading.Thread(target=again, daemon=True, name=f"garp-{net.netns}").start()


def set_host_link(net: PodNet, up: bool) -> None:
    """Connect (up) or cut (down) the pod from its node bridge, keeping its addresses."""
    run(["ip", "-n", net.node_netns, "link", "set", net.host_veth, "up" if up else "down"],
        check=up)


def delete_pod_net(net: PodNet) -> None:
    """Kill whatever runs in the pod's namespace and delete it (its veth pair goes too)."""
    netns_delete(net.netns)
    if netns_exists(net.node_netns):
        run(["ip", "-n", net.node_netns, "link", "del", net.host_veth], check=False)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def is_missing(exc: OSError) -> bool:
    return exc.errno in (errno.ENOENT, errno.ESRCH)
