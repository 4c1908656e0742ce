"""A real two-node Kubernetes cluster on this machine, for the kubelet runtime's tests.

Why: the `kubelet` agent runtime checkpoints through the kubelet API and restores through
containerd's CRI; only real kubelets, containerds, runc and CRIU show whether that works.
This module starts, on one host, what a small cluster has (docs/node-testenv.md):

- etcd + kube-apiserver (:class:`~tests.support.envtest.KubeTestEnv`) on 198.19.240.1,
  with Node,RBAC authorization, the ServiceAccount and NodeRestriction admission plugins,
  kube-controller-manager (ServiceAccounts, tokens, ReplicaSets, DaemonSets, garbage
  collection) and kube-scheduler;
- two nodes, each a kubelet v1.37 with its own containerd 2.3 (CRI restore on), in a mount
  namespace of its own where the standard paths (/etc/containerd, /run/containerd,
  /var/lib/kubelet, /var/lib/cni, /etc/cni/net.d, /var/log/pods, ...) are per-node
  directories, so the Helm chart's fixed hostPaths mean "this node" as on a real machine;
- one flat pod network: a Linux bridge `lpbr0` holding 198.19.240.0/24 (apiserver .1,
  node IPs .2 and .3, pods of node A .10-.99 and of node B .100-.199, CNI bridge +
  host-local). Pods, nodes and the apiserver are on one L2 segment, as with the EKS VPC CNI,
  so nothing is routed: the machine's ip_forward stays 0 and no traffic leaves (198.18.0.0/15
  has no route out).

Everything of a node runs in the cgroup `livepolicy-nodeenv/<node>` (kubelet's
`cgroupRoot`, and the node's own daemons under `system`), so teardown kills exactly those
processes, mount namespaces die with them, and `cleanup()` removes the cgroups, the
bridge, veths and directories. A watchdog process runs `cleanup()` if the test process
dies without stopping the cluster (SIGKILL, crash); the next start runs it too.

Command line (scripts/node-cluster.sh): `python -m tests.support.nodeenv up|down`.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from livepolicy.agent.runtimes import kubelet_ipam as ipam
from tests.support.envtest import (
    KubeTestEnv,
    KubeTestEnvError,
    _cert_pem,
    _free_ports,
    _key_pem,
    _KeyPair,
    _make_leaf,
    _name,
    _Proc,
    _write,
)

CACHE = Path(os.environ.get("LIVEPOLICY_CACHE") or Path.home() / ".cache" / "livepolicy")
NODE_BIN = CACHE / "node" / "bin"
CRIU_BIN = CACHE / "criu" / "bin"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10-livepolicy"  # scripts/setup-node-testenv.sh
PAUSE_TAR = CACHE / "node" / "images" / "pause.oci.tar"
IMAGE_DIR = CACHE / "image"  # scripts/build-image.sh
ROOT = Path(os.environ.get("LIVEPOLICY_NODEENV_ROOT") or "/var/lib/livepolicy-nodeenv")
CGROUP_NAME = "livepolicy-nodeenv"
CGROUPS = Path("/sys/fs/cgroup")
BRIDGE = "lpbr0"
SUBNET = ipaddress.ip_network("198.19.240.0/24")
API_IP = "198.19.240.1"
ZONE, REGION, SUBNET_ID = "us-east-1a", "us-east-1", "subnet-lpnodeenv"
START_TIMEOUT = 120.0
#: /etc/criu/runc.conf of each node (docs/kubelet-runtime.md: what a node image needs):
#: no iptables here, lock with nftables; dump and restore established TCP connections.
CRIU_RUNC_CONF = "network-lock nftables\ntcp-established\n"
#: The node's own CNI plugin directory (the chart's keepPodAddress installs livepolicy-ipam
#: there) and that plugin's data directory (the agent's reservations).
CNI_BIN = "/opt/cni/bin"
IPAM_DIR = ipam.DEFAULT_DATA_DIR

#: The per-node directories bind-mounted over the host paths in the node's mount namespace.
HOST_PATHS = ("/etc/containerd", "/run/containerd", "/var/lib/containerd", "/var/lib/kubelet",
              "/var/lib/cni", "/etc/cni/net.d", "/var/log/pods", "/var/log/containers",
              "/var/lib/livepolicy-agent", "/run/netns", "/etc/criu", CNI_BIN)


@dataclass(frozen=True)
class NodeSpec:
    """One node: name, InternalIP and its pods' address range in the shared /24."""

    name: str
    ip: str
    pod_first: str
    pod_last: str
    instance_type: str = "m6i.large"
    labels: dict[str, str] = field(default_factory=dict)


NODES = (
    NodeSpec("lp-node-a", "198.19.240.2", "198.19.240.10", "198.19.240.99",
             labels={"livepolicy.io/test-pool": "source"}),
    NodeSpec("lp-node-b", "198.19.240.3", "198.19.240.100", "198.19.240.199",
             labels={"livepolicy.io/test-pool": "destination"}),
)
#: A Node object with no kubelet behind it: arm64, so never a destination for amd64 pods.
ARM_NODE = "lp-node-arm"


def _run(*args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, text=True, capture_output=True, **kw)


# ---------------------------------------------------------------------------------------
# Cleanup: also what the watchdog and the next start do after a crash
# ---------------------------------------------------------------------------------------


def _hierarchies() -> list[Path]:
    """Every cgroup hierarchy of this machine (v1 controllers, name=systemd, unified)."""
    return sorted(p for p in CGROUPS.iterdir() if p.is_dir() and not p.is_symlink())


def _cgroup_dirs(top: Path) -> list[Path]:
    """`top` and every cgroup below it, deepest first (the order rmdir needs)."""
    if not top.is_dir():
        return []
    found = [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _pids(top: Path) -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs(top):
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
    return pids


def kill_cgroup(name: str, timeout: float = 20.0) -> None:
    """SIGKILL every process in cgroup `name` (any hierarchy) and remove its cgroups.

    Repeated until empty: a process forked while we read cgroup.procs lands in the same
    cgroup and is found on the next pass."""
    deadline = time.monotonic() + timeout
    while True:
        pids = set().union(*(_pids(h / name) for h in _hierarchies()))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        busy = False
        for h in _hierarchies():
            for d in _cgroup_dirs(h / name):
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    busy = True
        if not pids and not busy:
            return
        if time.monotonic() > deadline:
            left = set().union(*(_pids(h / name) for h in _hierarchies()))
            raise KubeTestEnvError(f"cgroup {name} still holds processes {sorted(left)}")
        time.sleep(0.1)


def _links_on_bridge() -> list[str]:
    r = _run("ip", "-j", "link", "show", "master", BRIDGE, check=False)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    return [str(link["ifname"]) for link in json.loads(r.stdout)]


def cleanup() -> None:
    """Remove whatever a node environment left: processes, cgroups, veths, the bridge,
    its directories and the mountpoints it created. Safe when nothing is left."""
    kill_cgroup(CGROUP_NAME)
    for link in _links_on_bridge():
        _run("ip", "link", "del", link, check=False)
    _run("ip", "link", "del", BRIDGE, check=False)
    created = ROOT / "created-mountpoints"
    if created.is_file():
        for line in reversed(created.read_text().splitlines()):
            with contextlib.suppress(OSError):
                Path(line).rmdir()  # only if still empty: never anyone else's files
    for child in ROOT.iterdir() if ROOT.is_dir() else ():
        if child.name != ".lock":
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def leftovers() -> list[str]:
    """What a stopped environment must not leave behind (empty when clean)."""
    found = [f"cgroup {h / CGROUP_NAME}" for h in _hierarchies() if (h / CGROUP_NAME).exists()]
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        found.append(f"interface {BRIDGE}")
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (p / "cmdline").read_bytes()
                if str(ROOT).encode() in cmd:
                    args = cmd.replace(b"\0", b" ")[:120]
                    found.append(f"process {p.name}: {args!r}")
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines()
              if str(ROOT) in line.split()[4]]
    return found


def _watchdog(parent: int) -> None:
    """Runs in its own process: clean up once `parent` is gone (it crashed or was killed
    without stopping the environment), then exit. A clean stop kills the watchdog first."""
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    with _locked():
        cleanup()


@contextlib.contextmanager
def _locked() -> Iterator[IO[str]]:
    """One node environment per machine: it owns the bridge, the cgroup and ROOT."""
    ROOT.mkdir(parents=True, exist_ok=True)
    with (ROOT / ".lock").open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield f


# ---------------------------------------------------------------------------------------
# Node configuration files
# ---------------------------------------------------------------------------------------


def containerd_config(node_bin: Path) -> str:
    """containerd 2.3 (config version 3): CRI with restore through CreateContainer."""
    return f"""version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins.'io.containerd.cri.v1.runtime']
  # Restore a checkpoint image given as a container's image (removed in containerd 2.4).
  enable_experimental_restore_via_create = true
  # This machine refuses lowering oom_score_adj (no CAP_SYS_RESOURCE in the VM).
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{node_bin / 'runc'}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{node_bin}", "{CNI_BIN}"]
    conf_dir = "/etc/cni/net.d"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def cni_config(node: NodeSpec) -> dict[str, Any]:
    """The shared bridge, no gateway on it (that would turn ip_forward on), and this node's
    slice of the /24; the default route points at the apiserver's address (not routed).
    IPAM is livepolicy-ipam around host-local: a restored copy keeps its source's address
    on the one L2 segment (docs/kubelet-runtime.md, IP and TCP)."""
    host_local = {"type": "host-local",
                  "ranges": [[{"subnet": str(SUBNET), "rangeStart": node.pod_first,
                               "rangeEnd": node.pod_last}]],
                  "routes": [{"dst": "0.0.0.0/0", "gw": API_IP}]}
    return {
        "cniVersion": "1.0.0", "name": "livepolicy-nodeenv",
        "plugins": [{
            "type": "bridge", "bridge": BRIDGE, "isGateway": False, "ipMasq": False,
            "hairpinMode": True,
            "ipam": {"type": ipam.PLUGIN, "dataDir": IPAM_DIR, "delegate": host_local},
        }],
    }


def kubelet_config(node: NodeSpec, conf: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node.ip, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": node.ip, "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(conf / "client-ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(conf / "kubelet.crt"), "tlsPrivateKeyFile": str(conf / "kubelet.key"),
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        # This machine is cgroup v1 (hybrid); kubelet 1.35+ refuses v1 unless told.
        "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{CGROUP_NAME}/{node.name}",
        "failCgroupV1": False, "cgroupsPerQOS": True,
        "featureGates": {"ContainerCheckpoint": True},
        "failSwapOn": False, "oomScoreAdj": 0, "resolvConf": "/etc/resolv.conf",
        # A test machine's disk may be fuller than a node's: evict only when really out.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "registerNode": True, "maxPods": 40, "shutdownGracePeriod": "0s",
        "nodeStatusReportFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s", "fileCheckFrequency": "10s",
    }


def node_labels(node: NodeSpec) -> dict[str, str]:
    """What EKS and Cast AI put on a node (those NodeRestriction lets a kubelet set)."""
    return {"topology.kubernetes.io/zone": ZONE, "topology.kubernetes.io/region": REGION,
            "node.kubernetes.io/instance-type": node.instance_type,
            "eks.amazonaws.com/nodegroup": "livepolicy-nodeenv",
            "provisioner.cast.ai/managed-by": "cast.ai", "topology.cast.ai/subnet-id": SUBNET_ID,
            **node.labels}


# ---------------------------------------------------------------------------------------
# The environment
# ---------------------------------------------------------------------------------------


@dataclass
class Node:
    """A started node: its spec, directories and processes."""

    spec: NodeSpec
    dir: Path
    holder: _Proc | None = None
    containerd: _Proc | None = None
    kubelet: _Proc | None = None
    kubelet_args: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def socket(self) -> Path:
        """containerd's socket, as the host sees it (outside the node's mount namespace)."""
        return self.dir / "run-containerd" / "containerd.sock"

    def host_path(self, path: str) -> Path:
        """Where a path of the node (e.g. /var/lib/kubelet/checkpoints) is on the host."""
        for p in HOST_PATHS:
            if path == p or path.startswith(p + "/"):
                return self.dir / p.strip("/").replace("/", "-") / path[len(p):].lstrip("/")
        raise ValueError(f"{path} is the host's own, not a per-node path")

    def ctr(self, *args: str, timeout: float = 120.0) -> str:
        r = _run(str(NODE_BIN / "ctr"), "--address", str(self.socket), "-n", "k8s.io", *args,
                 check=False, timeout=timeout)
        if r.returncode != 0:
            raise KubeTestEnvError(f"ctr {' '.join(args)} on {self.name}: {r.stderr.strip()}")
        return r.stdout


class NodeTestEnv:
    """The control plane and two nodes; a context manager. `kube` is the control plane
    (admin kubeconfig: :attr:`kubeconfig_path`), `nodes` the two started nodes."""

    def __init__(self, *, images: Sequence[Path] = (), keep: bool = False) -> None:
        self.images = [PAUSE_TAR, *images]
        self.keep = keep
        self.kube: KubeTestEnv | None = None
        self.nodes: list[Node] = []
        self._procs: list[_Proc] = []
        self._lock: contextlib.ExitStack | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.timings: dict[str, float] = {}

    def __enter__(self) -> NodeTestEnv:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def kubeconfig_path(self) -> Path:
        assert self.kube is not None
        return self.kube.kubeconfig_path

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> NodeTestEnv:
        missing = [p for p in [*(NODE_BIN / b for b in (
            "kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "runc", "bridge",
            "host-local", "loopback", "kube-controller-manager", "kube-scheduler")),
            CRIU_BIN / "criu", *self.images] if not p.exists()]
        if missing:
            raise KubeTestEnvError(
                f"node test environment incomplete: missing {', '.join(map(str, missing))}; "
                "run scripts/setup-node-testenv.sh, scripts/setup-criu.sh and "
                "scripts/build-image.sh")
        began = time.monotonic()
        stack = contextlib.ExitStack()
        stack.enter_context(_locked())
        self._lock = stack
        try:
            cleanup()
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "tests.support.nodeenv", "watchdog", str(os.getpid())],
                cwd=Path(__file__).resolve().parents[2], start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._network()
            self._cgroups()
            self.kube = KubeTestEnv(address=API_IP, start_timeout=START_TIMEOUT,
                                    extra_apiserver_args=self._apiserver_args(),
                                    pki_hook=self._kubelet_client_cert)
            self.kube.start()
            self.timings["control_plane_s"] = time.monotonic() - began
            self._cluster_info()
            self._controllers()
            for spec in NODES:
                self.nodes.append(self._start_node(spec))
            for node in self.nodes:
                self.wait_ready(node.name)
            self._arm_node()
            self._wait_default_serviceaccount()
        except BaseException:
            self.stop()
            raise
        self.timings["start_s"] = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop kubelets, containerds and their pods, then the control plane; remove all."""
        began = time.monotonic()
        try:
            for node in self.nodes:
                for proc in (node.kubelet, node.containerd, node.holder):
                    if proc is not None:
                        proc.stop(grace=5.0)
            for proc in reversed(self._procs):
                proc.stop(grace=5.0)
            if not self.keep:
                cleanup()
        finally:
            self.nodes, self._procs = [], []
            if self.kube is not None:
                self.kube.stop()
                self.kube = None
            if self._watchdog is not None:
                self._watchdog.kill()
                self._watchdog.wait()
                self._watchdog = None
            if self._lock is not None:
                self._lock.close()
                self._lock = None
        self.timings["stop_s"] = time.monotonic() - began

    # -- control plane --------------------------------------------------------------------

    def _network(self) -> None:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{API_IP}/{SUBNET.prefixlen}", "dev", BRIDGE)
        for spec in NODES:
            _run("ip", "addr", "add", f"{spec.ip}/32", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")

    def _cgroups(self) -> None:
        """The node cgroups in every hierarchy (kubelet checks that its cgroupRoot exists);
        cpuset children start empty in v1, so they get the machine's CPUs and memory."""
        for h in _hierarchies():
            for rel in [CGROUP_NAME, *(f"{CGROUP_NAME}/{s.name}" for s in NODES),
                        *(f"{CGROUP_NAME}/{s.name}/system" for s in NODES)]:
                d = h / rel
                d.mkdir(exist_ok=True)
                if h.name == "cpuset":
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        (d / f).write_text((d.parent / f).read_text())

    def _apiserver_args(self) -> list[str]:
        return [
            "--authorization-mode=Node,RBAC",
            # kube-controller-manager creates default ServiceAccounts here: admit as usual.
            "--disable-admission-plugins=",
            "--enable-admission-plugins=NodeRestriction",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _kubelet_client_cert(self, pki: Path) -> list[str]:
        """Called by KubeTestEnv with its pki dir before kube-apiserver starts: the client
        certificate it shows kubelets, and the CA it checks their serving certificates with."""
        ca = _load_ca(pki, "client-ca")
        pair = _make_leaf(ca, _name("kube-apiserver-kubelet-client", "system:masters"),
                          ExtendedKeyUsageOID.CLIENT_AUTH)
        _write(pki / "kubelet-client.crt", _cert_pem(pair.cert), 0o644)
        _write(pki / "kubelet-client.key", _key_pem(pair.key))
        return [f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'serving-ca.crt'}"]

    def _cluster_info(self) -> None:
        """The facts the API cannot give (docs/kubernetes.md): this is an EKS-shaped cluster
        whose one subnet is the bridge's /24."""
        spec = {"platform": "eks", "region": REGION,
                "networking": {"prefixDelegation": False, "mode": "standard"},
                "subnets": [{"id": SUBNET_ID, "zone": ZONE, "cidr": str(SUBNET),
                             "tags": {}}]}
        self.create("/api/v1/namespaces/kube-system/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "livepolicy-cluster-info", "namespace": "kube-system"},
            "data": {"name": "livepolicy-nodeenv", "spec": json.dumps(spec)}})

    def _controllers(self) -> None:
        assert self.kube is not None
        pki, work = self.kube.work_dir / "pki", self.kube.work_dir
        kcfg = str(self.kube.kubeconfig_path)
        kcm_port, sched_port = _free_ports(2)
        self._procs.append(_Proc("kube-controller-manager", [
            str(NODE_BIN / "kube-controller-manager"), f"--kubeconfig={kcfg}",
            f"--authentication-kubeconfig={kcfg}", f"--authorization-kubeconfig={kcfg}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'serving-ca.crt'}",
            "--use-service-account-credentials=false", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={kcm_port}",
            "--controllers=*,-csrsigning,-nodeipam", "--node-monitor-grace-period=20s",
            "--concurrent-gc-syncs=5", "--v=1"], work / "kube-controller-manager.log"))
        self._procs.append(_Proc("kube-scheduler", [
            str(NODE_BIN / "kube-scheduler"), f"--kubeconfig={kcfg}",
            f"--authentication-kubeconfig={kcfg}", f"--authorization-kubeconfig={kcfg}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={sched_port}",
            "--v=1"], work / "kube-scheduler.log"))

    def _wait_default_serviceaccount(self) -> None:
        self.wait(lambda: self.get("/api/v1/namespaces/default/serviceaccounts/default")
                  is not None, "the default ServiceAccount (kube-controller-manager)")

    def _arm_node(self) -> None:
        """The negative case: a registered arm64 node with no kubelet (its Ready condition
        turns Unknown once the node controller notices)."""
        labels = node_labels(NodeSpec(ARM_NODE, "198.19.240.4", "", "", "m7g.large"))
        labels |= {"kubernetes.io/arch": "arm64", "kubernetes.io/os": "linux",
                   "kubernetes.io/hostname": ARM_NODE}
        self.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                      "metadata": {"name": ARM_NODE, "labels": labels}})

    # -- nodes ----------------------------------------------------------------------------

    def _start_node(self, spec: NodeSpec) -> Node:
        assert self.kube is not None
        began = time.monotonic()
        node = Node(spec, ROOT / spec.name)
        conf = node.dir / "conf"
        conf.mkdir(parents=True)
        binds = []
        created = ROOT / "created-mountpoints"
        for p in HOST_PATHS:
            src = node.dir / p.strip("/").replace("/", "-")
            src.mkdir(parents=True, exist_ok=True)
            target = Path(p)
            for parent in [*reversed(target.parents), target]:
                if not parent.exists():
                    parent.mkdir()
                    with created.open("a") as f:
                        f.write(f"{parent}\n")
            binds.append(f"mount --bind {src} {p}")
        node.host_path("/etc/containerd/config.toml").write_text(containerd_config(NODE_BIN))
        # runc passes this file to every criu it runs: no iptables here, lock with nftables.
        node.host_path("/etc/criu/runc.conf").write_text(CRIU_RUNC_CONF)
        (node.host_path("/etc/cni/net.d") / "10-livepolicy.conflist").write_text(
            json.dumps(cni_config(spec), indent=2))
        # As a node image would have it; the chart's init container installs it again.
        ipam.install(str(node.host_path(CNI_BIN)))
        self._node_pki(spec, conf)
        (conf / "kubelet.yaml").write_text(json.dumps(kubelet_config(spec, conf), indent=2))

        cg = f"{CGROUPS}/pids/{CGROUP_NAME}/{spec.name}/system/cgroup.procs"
        enter = f'echo $$ > {cg} && exec "$@"'
        node.holder = _Proc(f"{spec.name}-holder", [
            "sh", "-c", enter, "sh", "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", " && ".join([*binds, "exec sleep infinity"])], conf / "holder.log")
        pid = node.holder.popen.pid
        ns = f"/proc/{pid}/ns/mnt"
        # setpriv, sh, unshare and the inner shell exec one another in that one process,
        # which becomes `sleep` once every bind mount is made.
        self.wait(lambda: Path(f"/proc/{pid}/comm").read_text().strip() == "sleep",
                  f"{spec.name}'s mount namespace", node.holder)
        path = f"{NODE_BIN}:{CRIU_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        inside = ["nsenter", f"--mount={ns}", "--", "env", f"PATH={path}", "sh", "-c", enter, "sh"]
        node.containerd = _Proc(f"{spec.name}-containerd", [
            *inside, str(NODE_BIN / "containerd"), "--config", "/etc/containerd/config.toml",
            "--log-level", "info"], conf / "containerd.log")
        self.wait(lambda: node.socket.exists() and _run(
            str(NODE_BIN / "ctr"), "--address", str(node.socket), "version",
            check=False).returncode == 0, f"{spec.name}'s containerd", node.containerd)
        for image in self.images:
            node.ctr("images", "import", "--local", str(image), timeout=300)
            # What a CRI pull adds and `ctr import` does not: the image-ID name. A restore
            # looks the checkpoint's base image up by it (config.dump's rootfsImageRef).
            ref, config_digest = image_ids(image)
            node.ctr("images", "tag", "--force", ref, config_digest)
        labels = ",".join(f"{k}={v}" for k, v in node_labels(spec).items())
        node.kubelet_args = [
            *inside, str(NODE_BIN / "kubelet"), f"--config={conf / 'kubelet.yaml'}",
            f"--kubeconfig={conf / 'kubelet.kubeconfig'}", f"--node-ip={spec.ip}",
            f"--hostname-override={spec.name}", f"--node-labels={labels}", "--v=1"]
        node.kubelet = _Proc(f"{spec.name}-kubelet", node.kubelet_args, conf / "kubelet.log")
        self.timings[f"{spec.name}_start_s"] = time.monotonic() - began
        return node

    def _node_pki(self, spec: NodeSpec, conf: Path) -> None:
        assert self.kube is not None
        pki = self.kube.work_dir / "pki"
        serving = _make_leaf(_load_ca(pki, "serving-ca"), _name(spec.name),
                             ExtendedKeyUsageOID.SERVER_AUTH,
                             [x509.DNSName(spec.name),
                              x509.IPAddress(ipaddress.ip_address(spec.ip))])
        client = _make_leaf(_load_ca(pki, "client-ca"),
                            _name(f"system:node:{spec.name}", "system:nodes"),
                            ExtendedKeyUsageOID.CLIENT_AUTH)
        _write(conf / "kubelet.crt", _cert_pem(serving.cert), 0o644)
        _write(conf / "kubelet.key", _key_pem(serving.key))
        _write(conf / "client.crt", _cert_pem(client.cert), 0o644)
        _write(conf / "client.key", _key_pem(client.key))
        shutil.copy(pki / "client-ca.crt", conf / "client-ca.crt")
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "nodeenv", "cluster": {
                "server": self.kube.server, "certificate-authority": str(pki / "serving-ca.crt")}}],
            "users": [{"name": "node", "user": {"client-certificate": str(conf / "client.crt"),
                                                "client-key": str(conf / "client.key")}}],
            "contexts": [{"name": "node", "context": {"cluster": "nodeenv", "user": "node"}}]}
        _write(conf / "kubelet.kubeconfig", json.dumps(kubeconfig).encode())

    def kill_kubelet(self, name: str) -> None:
        """SIGKILL a node's kubelet (a failure case); its containers keep running."""
        node = self.node(name)
        assert node.kubelet is not None
        os.kill(node.kubelet.popen.pid, signal.SIGKILL)
        node.kubelet.popen.wait()

    def start_kubelet(self, name: str) -> None:
        """Start a killed kubelet again (same flags) and wait until its node is Ready."""
        node = self.node(name)
        assert node.kubelet is not None and not node.kubelet.alive()
        node.kubelet.stop(grace=0)
        node.kubelet = _Proc(f"{name}-kubelet", node.kubelet_args,
                             node.dir / "conf" / "kubelet-restarted.log")
        self.wait_ready(name)

    # -- API helpers ----------------------------------------------------------------------

    def get(self, path: str) -> Any:
        """The object at `path`, or None when it does not exist."""
        assert self.kube is not None
        status, body = self.kube.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise KubeTestEnvError(f"GET {path}: HTTP {status}: {body}")
        return body

    def create(self, collection: str, obj: dict[str, Any]) -> Any:
        assert self.kube is not None
        status, body = self.kube.request("POST", collection, obj)
        if status not in (200, 201):
            raise KubeTestEnvError(f"POST {collection}: HTTP {status}: {body}")
        return body

    def wait(self, probe: Any, what: str, proc: _Proc | None = None,
             timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if proc is not None:
                proc.check_alive()
            if time.monotonic() > deadline:
                tail = f"; log {proc.log_path}:\n{proc.log_tail()}" if proc else ""
                raise KubeTestEnvError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
            time.sleep(0.2)

    def wait_ready(self, name: str, timeout: float = START_TIMEOUT) -> None:
        node = self.node(name)

        def ready() -> bool:
            obj = self.get(f"/api/v1/nodes/{name}")
            conds = (obj or {}).get("status", {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        self.wait(ready, f"node {name} Ready", node.kubelet, timeout)


def image_ids(oci_tar: Path) -> tuple[str, str]:
    """(reference, image ID = config digest) of a one-image OCI layout tar."""
    import tarfile

    with tarfile.open(oci_tar) as tar:
        def blob(digest: str) -> Any:
            f = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert f is not None
            return json.load(f)

        index_file = tar.extractfile("index.json")
        assert index_file is not None
        (desc,) = json.load(index_file)["manifests"]
        ref = desc["annotations"]["io.containerd.image.name"]
        return str(ref), str(blob(desc["digest"])["config"]["digest"])


def livepolicy_image() -> Path:
    """The image scripts/build-image.sh made of this checkout's version."""
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    return IMAGE_DIR / f"livepolicy-{version}.oci.tar"


def _load_ca(pki: Path, name: str) -> _KeyPair:
    cert = x509.load_pem_x509_certificate((pki / f"{name}.crt").read_bytes())
    key = serialization.load_pem_private_key((pki / f"{name}.key").read_bytes(), None)
    return _KeyPair(cert, key)  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    """`up` (start, print the kubeconfig, run until interrupted), `down` (cleanup after a
    crash), `watchdog PID` (internal)."""
    if argv[:1] == ["watchdog"]:
        _watchdog(int(argv[1]))
        return 0
    if argv[:1] == ["down"]:
        with _locked():
            cleanup()
        left = leftovers()
        print("\n".join(left) if left else "node test environment: nothing left")
        return 1 if left else 0
    if argv[:1] == ["up"]:
        with NodeTestEnv(images=[livepolicy_image()]) as env:
            print(f"export KUBECONFIG={env.kubeconfig_path}", flush=True)
            print(json.dumps({k: round(v, 2) for k, v in env.timings.items()}), flush=True)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    print("usage: python -m tests.support.nodeenv up|down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
