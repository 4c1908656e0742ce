"""A cluster on one machine: lab nodes, subnets and pods made of namespaces, real agents.

Layout (PREFIX defaults to `lpl`; every name below starts with it):

    PREFIX-fabric          the "VPC": one bridge per subnet (br1, br2, ...), no address,
                           no route anywhere
    PREFIX-n<i>            lab node i: bridge br0 holding the node IP, uplink up0 <-> n<i>
                           on its subnet's bridge in the fabric
    PREFIX-p<8 hex>        a pod: eth0 (pod IP from its node's subnet, MAC derived from the
                           IP) <-> a veth on its node's br0; the process runs in its own
                           pid namespace too
    PREFIX-c<s>            a client host on subnet s (address .250), for streaming clients

One agent per node (`python -m livepolicy.agent --runtime criu`) listens on the host's
loopback (the lab's management network) and moves pods through CRIU. Inside a subnet a
pod keeps its IP on any node; across subnets the destination agent refuses it
(`subnet_mismatch`), as the VPC would: the address cannot live in another subnet.
Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking) and never leave the lab's
namespaces. Everything created is recorded first (`record.py`), so `down` removes it all,
even after a crash.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livepolicy.agent.client import AgentClient, AgentClientError
from livepolicy.agent.fsutil import atomic_write_bytes, ensure_private_dir
from livepolicy.agent.launch import await_listening
from livepolicy.agent.runtimes import criu_lazy as lazy
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.criu import find_criu
from livepolicy.agent.runtimes.criu_pods import PodRecord, PodStore, query_stats, read_pods
from livepolicy.lab.record import Record, Teardown, raise_sysctl, stop_process, teardown

LAB_DIR_ENV = "LIVEPOLICY_LAB_DIR"
DEFAULT_ROOT = Path("/run/livepolicy-lab")
SHM = Path("/dev/shm")
LAB_FILE = "lab.json"
AGENTS_FILE = "agents.yaml"
LAB_NET = ipaddress.IPv4Network("198.18.0.0/15")
REGION = "us-east-1"
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f")
INSTANCE_TYPES = {"amd64": "m5.large", "arm64": "m6g.large"}
GENERATIONS = {"amd64": "5", "arm64": "6"}
POD_PORT = 7000
PODSERVER = Path(__file__).with_name("podserver.py")
AGENT_START_TIMEOUT_S = 60.0
POD_START_TIMEOUT_S = 120.0
MAX_IMAGE = "64Gi"


class LabError(RuntimeError):
    """Something the user can act on (no lab, lab exists, not root, bad option)."""


def lab_root(root: Path | str | None = None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get(LAB_DIR_ENV)
    return Path(env) if env else DEFAULT_ROOT


def parse_subnets(spec: str | int) -> list[str]:
    """`2` -> 198.18.1.0/24, 198.18.2.0/24; or a comma list of CIDRs inside 198.18.0.0/15."""
    text = str(spec).strip()
    if text.isdigit():
        n = int(text)
        if not 1 <= n <= 16:
            raise LabError("--subnets: between 1 and 16 subnets")
        return [f"198.18.{i}.0/24" for i in range(1, n + 1)]
    out: list[str] = []
    for part in text.split(","):
        try:
            net = ipaddress.IPv4Network(part.strip(), strict=True)
        except ValueError as exc:
            raise LabError(f"--subnets: {exc}") from None
        if not net.subnet_of(LAB_NET) or net.prefixlen > 24:
            raise LabError(f"--subnets: {net} must be a /24 or larger inside {LAB_NET}")
        if any(net.overlaps(ipaddress.IPv4Network(o)) for o in out):
            raise LabError(f"--subnets: {net} overlaps another subnet")
        out.append(str(net))
    if not out:
        raise LabError("--subnets: no subnet given")
    return out


def _host(cidr: str, index: int) -> str:
    return str(ipaddress.IPv4Network(cidr)[index])


@dataclass
class NodeInfo:
    name: str
    index: int
    subnet: str  # subnet id
    cidr: str
    zone: str
    arch: str
    instance_type: str
    netns: str
    ip: str
    dir: str  # lab files of this node (token, config, log)
    state_dir: str  # the agent's state (tmpfs)
    pods_dir: str
    agent_url: str = ""
    agent_pid: int = 0
    agent_start: int = 0
    unschedulable: bool = False
    created: str = ""

    @property
    def token_file(self) -> Path:
        return Path(self.dir) / "token"

    @property
    def config_file(self) -> Path:
        return Path(self.dir) / "node.json"

    def token(self) -> str:
        return self.token_file.read_text(encoding="utf-8").strip()

    def client(self, timeout: float = 60.0) -> AgentClient:
        return AgentClient(self.agent_url, self.token(), timeout=timeout)


class Lab:
    """A lab described by `<root>/lab.json`; `Lab.up(...)` builds one, `down()` removes it."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = lab_root(root)
        self.record = Record(self.root)
        self.data: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- persistence -----------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.root / LAB_FILE).is_file()

    def load(self) -> Lab:
        try:
            self.data = json.loads((self.root / LAB_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LabError(f"no lab at {self.root} (run `livepolicy lab up`)") from None
        except (OSError, ValueError) as exc:
            raise LabError(f"{self.root / LAB_FILE}: {exc}") from None
        return self

    def save(self) -> None:
        atomic_write_bytes(self.root / LAB_FILE,
                           json.dumps(self.data, indent=1, sort_keys=True).encode())

    @property
    def prefix(self) -> str:
        return str(self.data["prefix"])

    @property
    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo(**n) for n in self.data.get("nodes", [])]

    def node(self, name: str) -> NodeInfo:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no lab node {name!r} (nodes: "
                       f"{', '.join(n.name for n in self.nodes)})")

    def subnets(self) -> list[dict[str, Any]]:
        return list(self.data.get("subnets", []))

    def subnet(self, subnet_id: str) -> dict[str, Any]:
        for s in self.subnets():
            if s["id"] == subnet_id:
                return s
        raise LabError(f"no lab subnet {subnet_id!r}")

    def _set_node(self, node: NodeInfo) -> None:
        self.data["nodes"] = [node.__dict__ if n["name"] == node.name else n
                              for n in self.data["nodes"]]

    # -- up --------------------------------------------------------------------------------
    @classmethod
    def up(cls, root: Path | str | None = None, *, nodes: int = 3, subnets: str | int = 2,
           archs: str = "amd64", prefix: str = "lpl", pods: int = 0,
           pod_memory: int = 0, pod_dirty_rate: int = 0, criu: Path | None = None) -> Lab:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network and pid namespaces, CRIU)")
        if not prefix.isalnum() or not prefix.islower() or len(prefix) > 8:
            raise LabError("--prefix: up to 8 lowercase letters and digits")
        if not 1 <= nodes <= 32:
            raise LabError("--nodes: between 1 and 32")
        arch_list = [a.strip() for a in archs.split(",") if a.strip()]
        if not arch_list or any(a not in INSTANCE_TYPES for a in arch_list):
            raise LabError(f"--archs: a comma list of {', '.join(INSTANCE_TYPES)}")
        cidrs = parse_subnets(subnets)
        for tool in ("ip", "nft", "nsenter", "unshare", "setsid"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed (scripts/setup-criu.sh installs it)")
        criu_path = find_criu(criu)
        lab = cls(root)
        if lab.exists:
            raise LabError(f"a lab already exists at {lab.root}: `livepolicy lab down` first")
        if nets.list_netns(f"{prefix}-"):
            raise LabError(f"network namespaces named {prefix}-* exist already (another lab? "
                           "`livepolicy lab down` removes leftovers)")
        ensure_private_dir(lab.root)
        shm = SHM / f"livepolicy-lab-{prefix}-{secrets.token_hex(3)}"
        lab.record.add("dir", path=str(shm))
        ensure_private_dir(shm)
        # CRIU's lazy dump (post-copy) needs 4 MiB pipes; raised only if lower, undone by down
        raise_sysctl(lab.record, lazy.PIPE_MAX_SIZE, lazy.PIPE_MAX_NEEDED)
        lab.data = {
            "version": 1, "prefix": prefix, "root": str(lab.root), "shm": str(shm),
            "criu": str(criu_path), "region": REGION, "created_at": time.time(),
            "cluster_name": f"lab-{prefix}", "subnets": [], "nodes": [], "ips": {},
            "pod_meta": {},
        }
        try:
            lab._build(nodes, cidrs, arch_list)
            lab.save()
            lab._start_agents()
            lab.save()
            lab.write_agents_file()
            for i in range(pods):
                lab.create_pod(f"counter-{i}", memory=pod_memory, dirty_rate=pod_dirty_rate)
        except BaseException:
            with contextlib.suppress(Exception):
                lab.save()
            lab.down()
            raise
        return lab

    def _build(self, n_nodes: int, cidrs: list[str], archs: list[str]) -> None:
        p = self.prefix
        fabric = f"{p}-fabric"
        self._netns(fabric)
        batch = ["link set lo up"]
        for s, cidr in enumerate(cidrs, start=1):
            batch += [f"link add br{s} type bridge",
                      f"link set br{s} address 02:4c:46:00:00:{s:02x}", f"link set br{s} up"]
            sid = f"subnet-{p}-{chr(ord('a') + s - 1)}"
            client_ns = f"{p}-c{s}"
            self.data["subnets"].append({
                "id": sid, "cidr": cidr, "zone": ZONES[(s - 1) % len(ZONES)],
                "bridge": f"br{s}", "client_netns": client_ns,
                "client_ip": _host(cidr, 250 if ipaddress.IPv4Network(cidr).prefixlen == 24
                                   else -6)})
        nets.ip_batch(batch, fabric)
        for s, sub in enumerate(self.data["subnets"], start=1):
            self._netns(sub["client_netns"])
            nets.run(["ip", "-n", fabric, "link", "add", f"c{s}", "type", "veth", "peer",
                      "name", "eth0", "netns", sub["client_netns"]])
            nets.ip_batch([f"link set c{s} master br{s}", f"link set c{s} up"], fabric)
            prefixlen = ipaddress.IPv4Network(sub["cidr"]).prefixlen
            nets.ip_batch(["link set lo up", f"addr add {sub['client_ip']}/{prefixlen} dev eth0",
                           "link set eth0 up"], sub["client_netns"])
        shm = Path(self.data["shm"])
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for i in range(1, n_nodes + 1):
            s = (i - 1) * len(cidrs) // n_nodes  # contiguous blocks of nodes per subnet
            sub = self.data["subnets"][s]
            arch = archs[(i - 1) % len(archs)]
            name = f"lab-{i}"
            node_dir = ensure_private_dir(self.root / "nodes" / name)
            node_shm = ensure_private_dir(shm / name)
            node = NodeInfo(
                name=name, index=i, subnet=sub["id"], cidr=sub["cidr"], zone=sub["zone"],
                arch=arch, instance_type=INSTANCE_TYPES[arch], netns=f"{p}-n{i}",
                ip=_host(sub["cidr"], 10 + i), dir=str(node_dir),
                state_dir=str(node_shm / "state"), pods_dir=str(node_shm / "pods"),
                created=now)
            self._netns(node.netns)
            prefixlen = ipaddress.IPv4Network(sub["cidr"]).prefixlen
            nets.run(["ip", "-n", node.netns, "link", "add", "up0", "type", "veth", "peer",
                      "name", f"n{i}", "netns", fabric])
            # A bridge without a MAC of its own takes its ports' lowest one, which would
            # change as pods come and go and leave stale ARP entries for the node IP on
            # other nodes (page streams then stall for a minute): fix it.
            node_mac = "02:4c:4e" + nets.mac_for_ip(node.ip)[8:]
            nets.ip_batch(["link set lo up", "link add br0 type bridge",
                           f"link set br0 address {node_mac}", "link set br0 up",
                           "link set up0 master br0", "link set up0 up",
                           f"addr add {node.ip}/{prefixlen} dev br0"], node.netns)
            nets.ip_batch([f"link set n{i} master {sub['bridge']}", f"link set n{i} up"],
                          fabric)
            ensure_private_dir(Path(node.pods_dir))
            fd = os.open(node.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, secrets.token_urlsafe(32).encode())
            os.close(fd)
            atomic_write_bytes(node.config_file, json.dumps({
                "node": name, "netns": node.netns, "bridge": "br0", "subnet": sub["cidr"],
                "subnet_id": sub["id"], "netns_prefix": f"{p}-p", "pods_dir": node.pods_dir,
                "architecture": arch, "address": node.ip}, indent=1).encode())
            self.data["nodes"].append(node.__dict__)

    def _netns(self, name: str) -> None:
        self.record.add("netns", name=name)
        nets.netns_add(name)
        nets.write_sysctls(name, nets.NO_IPV6)

    # -- agents ----------------------------------------------------------------------------
    def _agent_command(self, node: NodeInfo) -> list[str]:
        return [sys.executable, "-m", "livepolicy.agent", "--node", node.name, "--port", "0",
                "--token-file", str(node.token_file), "--state-dir", node.state_dir,
                "--runtime", "criu", "--criu", self.data["criu"], "--criu-node-config",
                str(node.config_file), "--architecture", node.arch, "--max-image-bytes",
                MAX_IMAGE, "--fault-injection", "--log-level", "INFO"]

    def _start_agent(self, node: NodeInfo) -> None:
        log = (Path(node.dir) / "agent.log").open("ab")
        try:
            proc = subprocess.Popen(self._agent_command(node), stdout=subprocess.PIPE,
                                    stderr=log, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        finally:
            log.close()
        start = nets.proc_start_time(proc.pid) or 0
        self.record.add("process", pid=proc.pid, start=start, what=f"agent {node.name}",
                        marker=str(node.token_file))
        node.agent_pid, node.agent_start = proc.pid, start
        try:
            info = await_listening(proc, AGENT_START_TIMEOUT_S)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        if info is None:
            proc.wait(5)
            tail = (Path(node.dir) / "agent.log").read_text(errors="replace")[-800:]
            raise LabError(f"agent of {node.name} did not start:\n{tail}")
        node.agent_url = f"http://127.0.0.1:{info['port']}"

    def _start_agents(self) -> None:
        nodes = self.nodes
        errors: list[BaseException] = []

        def start(node: NodeInfo) -> None:
            try:
                self._start_agent(node)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(n,)) for n in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n in nodes:
            self._set_node(n)
        if errors:
            raise errors[0]

    def agent_alive(self, node: NodeInfo) -> bool:
        return nets.proc_alive(node.agent_pid, node.agent_start)

    def restart_agent(self, name: str) -> NodeInfo:
        """Stop a node's agent if it runs and start it again (its pods keep running)."""
        node = self.node(name)
        stop_process(node.agent_pid, node.agent_start, str(node.token_file))
        self._start_agent(node)
        self._set_node(node)
        self.save()
        self.write_agents_file()
        return node

    def write_agents_file(self) -> Path:
        """`agents.yaml` in the format of `livepolicy apply --agents FILE`."""
        lines = ["# lab agents: livepolicy apply --agents THIS_FILE"]
        for n in self.nodes:
            lines += [f"{n.name}:", f"  url: {n.agent_url}", f"  tokenFile: {n.token_file}"]
        path = self.root / AGENTS_FILE
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
        return path

    # -- pods --------------------------------------------------------------------------------
    def all_pods(self) -> list[tuple[NodeInfo, PodRecord]]:
        out: list[tuple[NodeInfo, PodRecord]] = []
        for n in self.nodes:
            for rec in read_pods(Path(n.pods_dir)):
                out.append((n, rec))
        return out

    def find_pod(self, key: str) -> tuple[NodeInfo, PodRecord]:
        """Where pod `ns/name` runs now (a running copy wins over a frozen one)."""
        if "/" not in key:
            key = f"default/{key}"
        found = [(n, r) for n, r in self.all_pods() if r.key == key]
        if not found:
            raise LabError(f"no lab pod {key}")
        running = [(n, r) for n, r in found if r.state == "running" and r.alive()]
        return (running or found)[0]

    def _allocate_ip(self, key: str, cidr: str) -> str:
        used = set(self.data["ips"].values())
        used |= {r.ip for _, r in self.all_pods()}
        hosts = list(ipaddress.IPv4Network(cidr).hosts())
        for host in hosts[99:199] if len(hosts) >= 200 else hosts[len(hosts) // 2:]:
            if str(host) not in used:
                self.data["ips"][key] = str(host)
                return str(host)
        raise LabError(f"no free pod address left in {cidr}")

    def create_pod(self, name: str, *, namespace: str = "default", node: str | None = None,
                   memory: int = 0, dirty_rate: int = 0, port: int = POD_PORT,
                   labels: dict[str, str] | None = None) -> PodRecord:
        """Start a counter pod on a node (by default the one with the fewest pods)."""
        with self._lock:
            key = f"{namespace}/{name}"
            if any(r.key == key for _, r in self.all_pods()):
                raise LabError(f"pod {key} exists already")
            if node is None:
                counts = {n.name: 0 for n in self.nodes}
                for n, _ in self.all_pods():
                    counts[n.name] += 1
                target = min(self.nodes, key=lambda n: (counts[n.name], n.index))
            else:
                target = self.node(node)
            ip = self._allocate_ip(key, target.cidr)
            self.data["pod_meta"][key] = {"labels": {"app": "counter", **(labels or {})},
                                          "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime())}
            self.save()
        digest = secrets.token_hex(4)
        net = nets.PodNet(netns=f"{self.prefix}-p{digest}", node_netns=target.netns,
                          bridge="br0", host_veth=f"v{digest}", ip=ip,
                          prefix=ipaddress.IPv4Network(target.cidr).prefixlen,
                          mac=nets.mac_for_ip(ip))
        self.record.add("netns", name=net.netns)
        nets.create_pod_net(net, gated=False)
        try:
            cmd = ["nsenter", f"--net={nets.netns_path(net.netns)}", "unshare", "--pid",
                   "--fork", "setsid", os.path.realpath(sys.executable), "-I", "-S",
                   str(PODSERVER), "--ip", ip, "--port", str(port), "--memory", str(memory),
                   "--dirty-rate", str(dirty_rate)]
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            self.record.add("process", pid=proc.pid, start=nets.proc_start_time(proc.pid) or 0,
                            what=f"pod {key} (unshare)", marker=str(PODSERVER))
            child = _wait_child(proc.pid)
            stats: dict[str, Any] | None = None

            def ready() -> bool:
                nonlocal stats
                if proc.poll() is not None:
                    raise LabError(f"pod {key} exited at start (rc={proc.returncode})")
                stats = query_stats(net.netns, ip, port, timeout=0.5)
                return stats is not None

            if not nets.wait_for(ready, POD_START_TIMEOUT_S, 0.05) or stats is None:
                raise LabError(f"pod {key} did not answer on {ip}:{port}")
            rec = PodRecord(
                namespace=namespace, name=name, uid=str(uuid.uuid4()), netns=net.netns,
                host_veth=net.host_veth, ip=ip, prefix=net.prefix, mac=net.mac, pid=child,
                pid_start=nets.proc_start_time(child) or 0, port=port, memory_bytes=memory,
                dirty_rate_bytes=dirty_rate, state="running", token=str(stats["token"]),
                counter=int(stats["count"]), created_at=time.time(),
                labels=dict(self.data["pod_meta"][key]["labels"]))
            PodStore(Path(target.pods_dir)).save(rec)
        except BaseException:
            nets.delete_pod_net(net)
            with self._lock:
                self.data["ips"].pop(key, None)
                self.data["pod_meta"].pop(key, None)
                self.save()
            raise
        return rec

    def delete_pod(self, key: str) -> None:
        if "/" not in key:
            key = f"default/{key}"
        found = [(n, r) for n, r in self.all_pods() if r.key == key]
        if not found:
            raise LabError(f"no lab pod {key}")
        for n, rec in found:
            if rec.alive():
                nets.kill_and_wait([rec.pid])
            nets.delete_pod_net(nets.PodNet(rec.netns, n.netns, "br0", rec.host_veth, rec.ip,
                                            rec.prefix, rec.mac))
            PodStore(Path(n.pods_dir)).delete(rec.namespace, rec.name)
        with self._lock:
            self.data["ips"].pop(key, None)
            self.data["pod_meta"].pop(key, None)
            self.save()

    def cordon(self, name: str, on: bool = True) -> None:
        node = self.node(name)
        node.unschedulable = on
        self._set_node(node)
        self.save()

    # -- status ----------------------------------------------------------------------------
    def status(self, *, probe: bool = True) -> dict[str, Any]:
        nodes = []
        for n in self.nodes:
            health: dict[str, Any] | str = "down"
            if self.agent_alive(n) and probe:
                try:
                    health = n.client(timeout=5).health()
                except AgentClientError as exc:
                    health = f"unreachable: {exc}"
            nodes.append({
                "name": n.name, "subnet": n.subnet, "cidr": n.cidr, "zone": n.zone,
                "architecture": n.arch, "instance_type": n.instance_type, "ip": n.ip,
                "netns": n.netns, "unschedulable": n.unschedulable,
                "agent": {"url": n.agent_url, "pid": n.agent_pid, "alive": self.agent_alive(n),
                          "health": health, "token_file": str(n.token_file),
                          "state_dir": n.state_dir}})
        pods = []
        for n, rec in self.all_pods():
            alive = rec.alive()
            counter = rec.counter
            if probe and alive and rec.state == "running":
                stats = query_stats(rec.netns, rec.ip, rec.port, timeout=0.5)
                if stats is not None:
                    counter = int(stats.get("count", counter))
            pods.append({
                "namespace": rec.namespace, "name": rec.name, "uid": rec.uid, "node": n.name,
                "ip": rec.ip, "port": rec.port, "mac": rec.mac, "netns": rec.netns,
                "state": rec.state if alive or rec.state != "running" else "dead",
                "pid": rec.pid, "counter": counter, "memory_bytes": rec.memory_bytes,
                "dirty_rate_bytes": rec.dirty_rate_bytes, "restored_by": rec.restored_by})
        return {"lab": {"root": str(self.root), "prefix": self.prefix,
                        "name": self.data.get("cluster_name"), "criu": self.data.get("criu"),
                        "agents_file": str(self.root / AGENTS_FILE)},
                "subnets": self.subnets(), "nodes": nodes, "pods": pods}

    # -- down ----------------------------------------------------------------------------------
    def down(self) -> Teardown:
        prefix = self.data.get("prefix") if self.data else None
        if prefix is None:
            with contextlib.suppress(LabError):
                self.load()
            prefix = self.data.get("prefix")
        if prefix is None:
            prefix = _prefix_from_record(self.record)
        result = teardown(self.root, str(prefix or "lpl"))
        if not result.leftovers:
            shutil.rmtree(self.root, ignore_errors=True)
        return result


def _prefix_from_record(record: Record) -> str | None:
    for e in record.entries():
        if e["kind"] == "netns" and str(e["name"]).endswith("-fabric"):
            return str(e["name"])[: -len("-fabric")]
    return None


def _wait_child(pid: int, timeout: float = 10.0) -> int:
    """The (only) child of `pid`: unshare --fork's child is the pod's pid-namespace init."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found: list[int] = []

    def has_child() -> bool:
        with contextlib.suppress(OSError, ValueError):
            found[:] = [int(x) for x in path.read_text().split()]
        return bool(found)

    if not nets.wait_for(has_child, timeout, 0.005):
        raise LabError(f"process {pid} started no pod process")
    return found[0]
