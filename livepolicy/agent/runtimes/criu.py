"""`criu`: real checkpoint/restore of pod processes with CRIU, TCP connections included.

A pod is a process tree in its own network and pid namespaces, started by the node's
container runtime (the lab stands in for containerd and the CNI) and recorded in the
node's pods directory (see `criu_pods`). This runtime adopts such pods and moves them:

- `checkpoint` runs `criu dump --tcp-established --network-lock nftables` inside the
  pod's network namespace. The dump kills the process; its plaintext images stay in an
  owner-only directory of this node until commit or rollback, and the pod is cut from
  the node bridge (its IP and MAC must not answer while another node brings them up).
  The images, with a manifest (pod, IP, MAC, identity, counter), are written as one
  stream into the agent's encrypting sink: what leaves the node is AES-GCM sealed.
- `restore` unpacks an authenticated image, refuses a pod whose IP is not in this node's
  subnet (`subnet_mismatch`: the address could not be kept) or of another architecture,
  creates the pod's network namespace with the same IP and MAC, *gated* (inbound TCP on
  eth0 dropped, loopback untouched), runs `criu restore` in it, then opens the gate and
  announces the MAC with a gratuitous ARP.
- `resume` (rollback before the commit point) restores the pod from the images kept on
  the source, in its own namespace, and reconnects it.
- `remove` (commit, or rollback of a destination) kills the process tree and deletes the
  namespace and the images.
- `precopy` runs `criu pre-dump --track-mem` rounds while the pod runs, where the kernel
  tracks dirty memory (soft-dirty; `criu check --feature mem_dirty_track`). The final
  dump then writes only pages dirtied since the last round (`--prev-images-dir`), and the
  image carries every round's directory. This kernel lacks soft-dirty, so here the agent
  advertises no dirty tracking and only stop-and-copy is offered.

Capabilities (CRIU version, dirty tracking, userfaultfd, nftables lock, CPU model and
features) are detected at start and written to `<state_dir>/runtime-capabilities.json`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from livepolicy.agent.crypto import ImageCorrupt, Sink
from livepolicy.agent.errors import ApiError, conflict, not_found
from livepolicy.agent.fsutil import atomic_write_bytes, ensure_private_dir
from livepolicy.agent.runtimes import criu_archive as archive
from livepolicy.agent.runtimes import criu_lazy as lazy
from livepolicy.agent.runtimes import criu_pages as pages
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.base import (
    Features,
    PodInfo,
    PodRef,
    PodState,
    RoundResult,
    VerifyResult,
)
from livepolicy.agent.runtimes.criu_pods import PodRecord, PodStore, query_stats

log = logging.getLogger("livepolicy.agent.criu")

CRIU_ENV = "LIVEPOLICY_CRIU"
CACHE_ENV = "LIVEPOLICY_CACHE"
CAPABILITIES_FILE = "runtime-capabilities.json"
CRIU_TIMEOUT_S = 900.0
SPARES_FILE = "spares.json"
SPARE_POOL = 2  # pod namespaces kept ready, so a restore does not wait to create one
RESTORE_PID_TIMEOUT_S = 10.0
LOG_TAIL = 1500

# /proc/cpuinfo flag -> node-feature-discovery cpuid name (feature.node.kubernetes.io/
# cpu-cpuid.NAME), for the CPU-feature pair rule.
NFD_CPUID = {
    "adx": "ADX", "aes": "AESNI", "avx": "AVX", "avx2": "AVX2", "avx512f": "AVX512F",
    "avx512bw": "AVX512BW", "avx512cd": "AVX512CD", "avx512dq": "AVX512DQ",
    "avx512vl": "AVX512VL", "avx512_vnni": "AVX512VNNI", "avx512_bf16": "AVX512BF16",
    "avx512_fp16": "AVX512FP16", "avx512ifma": "AVX512IFMA", "avx512vbmi": "AVX512VBMI",
    "avx512_vbmi2": "AVX512VBMI2", "avx512_bitalg": "AVX512BITALG",
    "avx512_vpopcntdq": "AVX512VPOPCNTDQ", "avx_vnni": "AVXVNNI", "amx_tile": "AMXTILE",
    "amx_bf16": "AMXBF16", "amx_int8": "AMXINT8", "bmi1": "BMI1", "bmi2": "BMI2",
    "f16c": "F16C", "fma": "FMA3", "gfni": "GFNI", "movbe": "MOVBE", "pclmulqdq": "CLMUL",
    "popcnt": "POPCNT", "rdrand": "RDRAND", "rdseed": "RDSEED", "sha_ni": "SHA",
    "sse4_1": "SSE4", "sse4_2": "SSE42", "ssse3": "SSSE3", "vaes": "VAES",
    "vpclmulqdq": "VPCLMULQDQ", "cx16": "CX16", "lzcnt": "LZCNT", "abm": "LZCNT",
    "erms": "ERMS", "fsrm": "FSRM", "hle": "HLE", "rtm": "RTM", "mpx": "MPX",
    "clwb": "CLWB", "clflushopt": "CLFLUSHOPT", "sgx": "SGX", "waitpkg": "WAITPKG",
}


def find_criu(configured: Path | None = None) -> Path:
    """The CRIU to run: the configured path, else `$LIVEPOLICY_CRIU`, else the wrapper that
    scripts/setup-criu.sh installs (`${LIVEPOLICY_CACHE:-~/.cache/livepolicy}/criu/bin/criu`),
    else `criu` on PATH."""
    if configured is not None:
        return configured
    env = os.environ.get(CRIU_ENV)
    if env:
        return Path(env)
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "livepolicy")
    wrapper = cache / "criu" / "bin" / "criu"
    if wrapper.is_file():
        return wrapper
    found = shutil.which("criu")
    if found:
        return Path(found)
    raise ValueError(f"no CRIU found: run scripts/setup-criu.sh, or give --criu PATH or "
                     f"${CRIU_ENV}")


@dataclass(frozen=True)
class CriuCapabilities:
    criu_path: str
    version: str
    check_ok: bool
    check_output: str
    dirty_tracking: bool  # soft-dirty: pre-dump / --track-mem work
    uffd: bool
    uffd_noncoop: bool  # post-copy (lazy pages) possible
    nftables_lock: bool
    cpu_vendor: str
    cpu_model: str
    cpu_flags: tuple[str, ...]
    cpu_features: tuple[str, ...]  # NFD cpuid names
    kernel: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cpu_flags"] = list(self.cpu_flags)
        out["cpu_features"] = list(self.cpu_features)
        return out


def read_cpu_info(path: Path = Path("/proc/cpuinfo")) -> tuple[str, str, tuple[str, ...]]:
    vendor = model = ""
    flags: set[str] = set()
    try:
        text = path.read_text()
    except OSError:
        return "", "", ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return vendor, model, tuple(sorted(flags))


class CriuTool:
    """Runs CRIU (optionally inside a network namespace) and reads what it reports."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def command(self, args: list[str], netns: str | None = None) -> list[str]:
        base = [str(self.path), *args]
        if netns:
            return ["nsenter", f"--net={nets.netns_path(netns)}", *base]
        return base

    def run(self, args: list[str], *, netns: str | None = None,
            timeout: float = CRIU_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(self.command(args, netns), capture_output=True, text=True,
                                  timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ApiError(500, "criu_failed", f"criu {args[0]} timed out after "
                           f"{timeout:.0f}s") from None
        except OSError as exc:
            raise ApiError(500, "criu_failed", f"cannot run {self.path}: {exc}") from None

    def feature(self, name: str) -> bool:
        res = self.run(["check", "--feature", name], timeout=30)
        return res.returncode == 0 and "is supported" in (res.stdout + res.stderr)

    def detect(self) -> CriuCapabilities:
        version = ""
        res = self.run(["--version"], timeout=30)
        for line in res.stdout.splitlines():
            if line.startswith("Version:"):
                version = line.split(":", 1)[1].strip()
        check = self.run(["check"], timeout=60)
        check_out = (check.stdout + check.stderr).strip()
        vendor, model, flags = read_cpu_info()
        features = tuple(sorted({NFD_CPUID[f] for f in flags if f in NFD_CPUID}))
        return CriuCapabilities(
            criu_path=str(self.path), version=version,
            check_ok=check.returncode == 0 and "Looks good" in check_out,
            check_output=check_out[-500:],
            dirty_tracking=self.feature("mem_dirty_track"),
            uffd=self.feature("uffd"), uffd_noncoop=self.feature("uffd-noncoop"),
            nftables_lock=self.feature("network_lock_nftables"),
            cpu_vendor=vendor, cpu_model=model, cpu_flags=flags, cpu_features=features,
            kernel=platform.release())


@dataclass(frozen=True)
class NodeNetwork:
    """This node's pod network, written by whoever set the node up (the lab)."""

    node: str
    netns: str  # the node's network namespace, holding `bridge`
    bridge: str
    subnet: str  # CIDR of the node's subnet: restored pods must keep an IP inside it
    subnet_id: str
    netns_prefix: str  # names of pod namespaces created here: PREFIX + 8 hex digits
    pods_dir: str
    architecture: str = ""
    address: str = ""  # the node's IP: page streams are served there (empty: inline pages)

    @classmethod
    def load(cls, path: Path) -> NodeNetwork:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"criu node config {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"criu node config {path}: not a JSON object")
        try:
            net = cls(**{k: str(raw[k]) for k in (
                "node", "netns", "bridge", "subnet", "subnet_id", "netns_prefix", "pods_dir")},
                architecture=str(raw.get("architecture", "")),
                address=str(raw.get("address", "")))
        except KeyError as exc:
            raise ValueError(f"criu node config {path}: missing {exc}") from None
        return net


def _tail(path: Path, limit: int = LOG_TAIL) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return " | ".join((errors or lines)[-6:])


def _pages_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("pages-*.img") if p.is_file())


class CriuRuntime:
    """Pods of one node checkpointed and restored by CRIU (see the module docstring)."""

    name = "criu"

    def __init__(
        self,
        *,
        state_dir: Path,
        node: str,
        tool: CriuTool,
        network: NodeNetwork,
        architecture: str,
        dirty_tracking_allowed: bool = True,
        post_copy_allowed: bool = True,
        fault_injection: bool = False,
        capabilities: CriuCapabilities | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.node = node
        self.tool = tool
        self.net = network
        self.architecture = architecture
        self.work = ensure_private_dir(state_dir / "criu")
        self.logs = ensure_private_dir(self.work / "logs")
        self.pods = PodStore(Path(network.pods_dir))
        self._stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._pod_locks: dict[str, threading.Lock] = {}
        self.caps = capabilities or tool.detect()
        if not self.caps.check_ok:
            raise ValueError(f"criu check failed for {tool.path}: {self.caps.check_output}")
        self._features = Features(
            dirty_tracking=self.caps.dirty_tracking and dirty_tracking_allowed,
            # lazy pages need userfaultfd (non-cooperative: the restored tree forks) and a
            # node address for the agents' relay
            post_copy=self.caps.uffd and self.caps.uffd_noncoop and post_copy_allowed
            and bool(network.address),
            tcp_established=True,
            fault_injection=fault_injection,
        )
        self._page_servers: dict[str, pages.PageServer] = {}
        self._lazy: dict[str, _LazyDump] = {}  # source: lazy dumps serving pages
        # asked when a destination starts pulling the pages of a dump served again after a
        # restart (the agent service sets it; until then such pulls are refused)
        self.pull_hook: Callable[[PodRef], bool] = lambda ref: False
        self._pulls: dict[str, _LazyPull] = {}  # destination: lazy-pages daemons
        self._spares: list[tuple[str, str]] = []  # (netns, host veth), gated, unattached
        self._spare_wakeup = threading.Event()
        atomic_write_bytes(state_dir / CAPABILITIES_FILE, json.dumps(
            {**self.caps.to_json(), "node": node, "architecture": architecture,
             "features": asdict(self._features)}, indent=1, sort_keys=True).encode())
        self._recover()
        self._spare_thread = threading.Thread(target=self._keep_spares, daemon=True,
                                              name=f"criu-spares-{node}")
        self._spare_thread.start()

    # -- plumbing ----------------------------------------------------------------------------
    @contextmanager
    def _pod_lock(self, ref: PodRef) -> Iterator[None]:
        with self._lock:
            lock = self._pod_locks.setdefault(ref.key, threading.Lock())
        with lock:
            yield

    def _podnet(self, rec: PodRecord) -> nets.PodNet:
        return nets.PodNet(netns=rec.netns, node_netns=self.net.netns, bridge=self.net.bridge,
                           host_veth=rec.host_veth, ip=rec.ip, prefix=rec.prefix, mac=rec.mac)

    def _pod_dir(self, rec: PodRecord) -> Path:
        return self.work / f"{rec.namespace}_{rec.name}"

    def _keep_log(self, src: Path, op: str, rec: PodRecord) -> None:
        with contextlib.suppress(OSError):
            shutil.copyfile(src, self.logs / f"{op}-{rec.namespace}_{rec.name}.log")

    def _state(self, rec: PodRecord) -> PodState | None:
        """The API state of a recorded pod, or None when it is gone (died on its own)."""
        if rec.state in ("frozen", "freezing"):
            return "frozen"
        if rec.state == "restoring":
            return "restoring"
        return "running" if rec.alive() else None

    def _info(self, rec: PodRecord, state: PodState, *, probe: bool = True) -> PodInfo:
        counter = rec.counter
        if state == "running" and probe:
            stats = query_stats(rec.netns, rec.ip, rec.port, timeout=0.5)
            if stats is not None and isinstance(stats.get("count"), int):
                counter = stats["count"]
        return PodInfo(namespace=rec.namespace, name=rec.name, uid=rec.uid, state=state,
                       memory_bytes=rec.memory_bytes, dirty_rate_bytes=rec.dirty_rate_bytes,
                       counter=counter, restored_by=rec.restored_by)

    def _need(self, ref: PodRef) -> PodRecord:
        rec = self.pods.get(ref.namespace, ref.name)
        if rec is None or self._state(rec) is None:
            raise not_found("pod_not_found", f"pod {ref.key} is not on this node")
        return rec

    def _need_settled(self, ref: PodRef) -> PodRecord:
        """`_need`, refusing a pod whose memory is still arriving (restored by post-copy,
        here or by a rollback): CRIU must not dump it half-faulted-in."""
        rec = self._need(ref)
        job = self._pulls.get(ref.key)
        if (job is not None and job.proc.poll() is None) or rec.lazy.get("old_netns"):
            raise conflict("pod_busy", f"pod {ref.key} is still receiving its memory "
                           "(post-copy): try again when it has all of it")
        return rec

    def _new_names(self, ref: PodRef, mid: str) -> tuple[str, str]:
        digest = hashlib.sha256(f"{self.node}/{ref.key}/{mid}".encode()).hexdigest()[:8]
        return f"{self.net.netns_prefix}{digest}", f"v{digest}"

    # -- warm pool of pod namespaces --------------------------------------------------------
    def _save_spares(self) -> None:
        atomic_write_bytes(self.work / SPARES_FILE, json.dumps(self._spares).encode())

    def _keep_spares(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                missing = SPARE_POOL - len(self._spares)
            if missing > 0:
                digest = os.urandom(4).hex()
                spare = (f"{self.net.netns_prefix}{digest}", f"v{digest}")
                with self._lock:  # recorded first: a crash now leaves nothing unknown
                    pending = [*self._spares, spare]
                    atomic_write_bytes(self.work / SPARES_FILE, json.dumps(pending).encode())
                try:
                    nets.create_spare_net(spare[0], self.net.netns, spare[1])
                except (nets.NetError, OSError, ValueError) as exc:
                    log.warning("cannot prepare a spare pod namespace: %s", exc)
                    with self._lock:
                        self._save_spares()
                    self._stop.wait(5.0)
                    continue
                with self._lock:
                    self._spares.append(spare)
                    self._save_spares()
                continue
            self._spare_wakeup.wait(1.0)
            self._spare_wakeup.clear()

    def _take_spare(self) -> tuple[str, str] | None:
        with self._lock:
            if not self._spares:
                return None
            spare = self._spares.pop(0)
            self._save_spares()
        self._spare_wakeup.set()
        if not nets.netns_exists(spare[0]):
            return None
        return spare

    def close(self) -> None:
        """Stop refilling the pool and delete the spare namespaces."""
        self._stop.set()
        self._spare_wakeup.set()
        self._spare_thread.join(timeout=10)
        with self._lock:
            spares, self._spares = self._spares, []
            self._save_spares()
        for netns, veth in spares:
            nets.netns_delete(netns)
            nets.run(["ip", "-n", self.net.netns, "link", "del", veth], check=False)

    # -- startup -----------------------------------------------------------------------------
    def _recover(self) -> None:
        """Settle what a crash interrupted: dumps, restores, unpacked images."""
        for rec in self.pods.all():
            if rec.state in ("freezing", "frozen") and rec.lazy and \
                    self._lazy_dump_alive(rec):
                rec.state = "frozen"  # the lazy dump still holds it: serve it again
                nets.set_host_link(self._podnet(rec), False)
                self.pods.save(rec)
                self._serve_lazy_again(rec)
            elif rec.state == "freezing":
                if rec.alive():
                    rec.state = "running"
                elif rec.dump_dir and (self._pod_dir(rec) / rec.dump_dir /
                                       "inventory.img").exists():
                    rec.state = "frozen"
                    nets.set_host_link(self._podnet(rec), False)
                else:
                    rec.state = "frozen"  # lost mid-dump: rollback will report it
                self.pods.save(rec)
            elif rec.state == "restoring":
                if rec.alive():
                    nets.gate_open(rec.netns)
                    rec.state = "running"
                    self.pods.save(rec)
                else:
                    self._teardown(rec)
        for rec in self.pods.all():
            if rec.state == "frozen" and rec.page_stream and self.net.address:
                dirs = [*rec.precopy_dirs, rec.dump_dir]
                try:
                    self._page_servers[rec.key] = pages.PageServer(
                        netns=self.net.netns, address=self.net.address,
                        root=self._pod_dir(rec), dirs=dirs, namespace=rec.namespace,
                        name=rec.name, uid=rec.uid, resume=rec.page_stream)
                except (OSError, KeyError, ValueError) as exc:
                    log.warning("cannot serve the pages of %s again: %s", rec.key, exc)
        for entry in self.work.glob("restore-*"):
            shutil.rmtree(entry, ignore_errors=True)
        try:  # spares of an earlier run: rebuild them rather than trust them
            old = json.loads((self.work / SPARES_FILE).read_text())
        except (OSError, ValueError):
            old = []
        for item in old if isinstance(old, list) else []:
            if isinstance(item, list) and len(item) == 2:
                nets.netns_delete(str(item[0]))
                nets.run(["ip", "-n", self.net.netns, "link", "del", str(item[1])], check=False)
        atomic_write_bytes(self.work / SPARES_FILE, b"[]")

    # -- Runtime: node ---------------------------------------------------------------------
    def features(self) -> Features:
        return self._features

    def list_pods(self) -> list[PodInfo]:
        out = []
        for rec in self.pods.all():
            state = self._state(rec)
            if state is not None:
                out.append(self._info(rec, state))
        return out

    def get_pod(self, ref: PodRef) -> PodInfo | None:
        rec = self.pods.get(ref.namespace, ref.name)
        state = None if rec is None else self._state(rec)
        return None if rec is None or state is None else self._info(rec, state)

    def put_pod(self, ref: PodRef, uid: str, memory_bytes: int,
                dirty_rate_bytes: int) -> tuple[PodInfo, bool]:
        rec = self.pods.get(ref.namespace, ref.name)
        state = None if rec is None else self._state(rec)
        if rec is None or state is None:
            raise not_found("pod_not_found", f"no pod {ref.key} runs on this node: the criu "
                            "runtime adopts pods that the node's container runtime started")
        if rec.uid != uid:
            raise conflict("pod_exists", f"pod {ref.key} exists with another uid")
        return self._info(rec, state), False

    # -- Runtime: source ---------------------------------------------------------------------
    def precopy(self, ref: PodRef, *, previous_dirty_bytes: int | None,
                slowdown: float) -> RoundResult:
        if not self._features.dirty_tracking:
            raise conflict("dirty_tracking_unavailable",
                           "this kernel does not track dirty memory (no soft-dirty)")
        with self._pod_lock(ref):
            rec = self._need_settled(ref)
            if self._state(rec) != "running":
                raise conflict("pod_not_running", f"pod {ref.key} is {rec.state}")
            pod_dir = ensure_private_dir(self._pod_dir(rec))
            if previous_dirty_bytes is None:  # a new migration: forget older rounds
                for d in rec.precopy_dirs:
                    shutil.rmtree(pod_dir / d, ignore_errors=True)
                rec.precopy_dirs = []
            name = f"pre-{len(rec.precopy_dirs)}"
            target = pod_dir / name
            shutil.rmtree(target, ignore_errors=True)
            ensure_private_dir(target)
            args = ["pre-dump", "-t", str(rec.pid), "-D", str(target), "--track-mem",
                    "--shell-job", "-o", "pre-dump.log"]
            if rec.precopy_dirs:
                args += ["--prev-images-dir", f"../{rec.precopy_dirs[-1]}"]
            started = time.monotonic()
            res = self.tool.run(args, netns=rec.netns)
            seconds = time.monotonic() - started
            self._keep_log(target / "pre-dump.log", "pre-dump", rec)
            if res.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise ApiError(500, "criu_failed", f"criu pre-dump of {ref.key} failed: "
                               f"{_tail(target / 'pre-dump.log') or res.stderr.strip()}")
            nbytes = _pages_bytes(target)
            rec.precopy_dirs.append(name)
            rec.work_dir = str(pod_dir)
            self.pods.save(rec)
        # What the next round must send is what was dirtied meanwhile; the best estimate
        # at hand is what this round had to send (all of memory in round 0).
        return RoundResult(bytes=nbytes, dirty_bytes=nbytes, seconds=seconds, frozen=False)

    def checkpoint(self, ref: PodRef, sink: Sink, *, previous_dirty_bytes: int | None,
                   slowdown: float) -> RoundResult:
        with self._pod_lock(ref):
            rec = self._need_settled(ref)
            state = self._state(rec)
            if state == "restoring":
                raise conflict("pod_not_running", f"pod {ref.key} is being restored")
            started = time.monotonic()
            pod_dir = self._pod_dir(rec)
            if rec.lazy and state != "running":
                raise conflict("already_frozen", f"pod {ref.key} is frozen by a lazy dump")
            if state == "running":
                rec = self._dump(rec, use_precopy=previous_dirty_bytes is not None)
            elif not (pod_dir / rec.dump_dir / "inventory.img").exists():
                raise ApiError(500, "criu_failed", f"pod {ref.key} is frozen but its images "
                               "are gone")
            dirs = [*rec.precopy_dirs, rec.dump_dir] if rec.dump_dir != "" else []
            select: Callable[[str], bool] | None = None
            page_info: dict[str, Any] | None = None
            if self.net.address:
                self._stop_page_server(ref.key)
                server = pages.PageServer(netns=self.net.netns, address=self.net.address,
                                          root=pod_dir, dirs=dirs, namespace=rec.namespace,
                                          name=rec.name, uid=rec.uid)
                self._page_servers[ref.key] = server
                page_info = server.manifest()
                select = _not_pages
                rec.page_stream = page_info
                self.pods.save(rec)
            manifest = {**self._manifest(rec), "restore_dir": rec.dump_dir,
                        "pages": page_info}
            t_archive = time.monotonic()
            archive.write_archive(sink, manifest, pod_dir, dirs, select=select)
            nbytes = sum(_pages_bytes(pod_dir / d) for d in dirs[-1:])
            log.info("checkpoint %s: %.3fs, archive %.3fs", ref.key, time.monotonic() - started,
                     time.monotonic() - t_archive)
        return RoundResult(bytes=nbytes, dirty_bytes=0, seconds=time.monotonic() - started,
                           frozen=True)

    # -- post-copy (lazy pages) ------------------------------------------------------------
    def checkpoint_lazy(self, ref: PodRef, sink: Sink, *, on_pull: Callable[[], bool]
                        ) -> RoundResult:
        """Freeze the pod with `criu dump --lazy-pages`: its state goes into `sink`, its
        memory stays with CRIU (on loopback) and the agent's relay until the destination
        pulled it. `on_pull` is asked when a destination starts pulling."""
        if not self._features.post_copy:
            raise conflict("post_copy_unavailable", "this node cannot serve lazy pages "
                           "(no userfaultfd, or no node address for the relay)")
        with self._pod_lock(ref):
            rec = self._need_settled(ref)
            state = self._state(rec)
            started = time.monotonic()
            if state == "running":
                rec = self._dump_lazy(rec, on_pull)
            elif not rec.lazy or ref.key not in self._lazy:
                raise conflict("already_frozen", f"pod {ref.key} is frozen, not by a lazy "
                               "dump this agent serves")
            dump = self._lazy[ref.key]
            manifest = {
                **self._manifest(rec), "restore_dir": rec.dump_dir, "pages": None,
                "lazy": {"address": self.net.address, "port": dump.relay.port,
                         "key": base64.b64encode(dump.relay.key).decode(),
                         "stream_id": rec.lazy["stream_id"]},
            }
            archive.write_archive(sink, manifest, self._pod_dir(rec), [rec.dump_dir])
            log.info("lazy checkpoint %s: %.3fs", ref.key, time.monotonic() - started)
        return RoundResult(bytes=_pages_bytes(self._pod_dir(rec) / rec.dump_dir),
                           dirty_bytes=0, seconds=time.monotonic() - started, frozen=True)

    def _dump_lazy(self, rec: PodRecord, on_pull: Callable[[], bool]) -> PodRecord:
        ok, value = lazy.pipe_max_ok()
        if not ok:
            raise conflict("post_copy_unavailable", f"fs.pipe-max-size is {value}: CRIU's "
                           f"lazy dump needs {lazy.PIPE_MAX_NEEDED} (the lab raises it)")
        pod_dir = ensure_private_dir(self._pod_dir(rec))
        target = pod_dir / "lazy"
        shutil.rmtree(target, ignore_errors=True)
        ensure_private_dir(target)
        stats = query_stats(rec.netns, rec.ip, rec.port, timeout=1.0)
        if stats is not None:
            rec.token = str(stats.get("token", rec.token))
            if isinstance(stats.get("count"), int):
                rec.counter = stats["count"]
        port = lazy.free_loopback_port(rec.netns)
        rec.state, rec.dump_dir, rec.work_dir = "freezing", "lazy", str(pod_dir)
        rec.lazy = {"criu_port": port, "stream_id": os.urandom(16).hex(), "old_netns": ""}
        self.pods.save(rec)
        args = ["dump", "-t", str(rec.pid), "-D", str(target), "--tcp-established",
                "--skip-in-flight", "--shell-job", "--network-lock", "nftables",
                "-o", "dump.log", "--lazy-pages", "--address", "127.0.0.1", "--port",
                str(port), "--status-fd", "{fd}"]
        t0 = time.monotonic()
        proc, code = lazy.start_with_status(self.tool.command(args, rec.netns))
        if proc is None:
            why = _tail(target / "dump.log") or f"exit code {code}"
            self._keep_log(target / "dump.log", "dump", rec)
            if rec.alive():
                rec.state, rec.dump_dir, rec.lazy = "running", "", {}
                self.pods.save(rec)
            raise ApiError(500, "criu_failed", f"criu lazy dump of {rec.key} failed: {why}")
        nets.set_host_link(self._podnet(rec), False)  # its IP must not answer here now
        key = os.urandom(32)
        context = lazy.lazy_context(rec.namespace, rec.name, rec.uid, rec.lazy["stream_id"])
        relay = lazy.Relay(node_netns=self.net.netns, address=self.net.address,
                           pod_netns=rec.netns, criu_port=port, key=key, context=context,
                           on_pull=on_pull)
        start = nets.proc_start_time(proc.pid) or 0
        self._lazy[rec.key] = _LazyDump(proc, proc.pid, start, relay)
        # kept beside the plaintext images they protect (tmpfs, 0600): a restarted agent
        # serves the pages again on the same port, as the sealed image describes them
        rec.lazy.update({"pid": proc.pid, "start": start, "relay_port": relay.port,
                         "relay_key": base64.b64encode(key).decode()})
        rec.state = "frozen"
        self.pods.save(rec)
        log.info("lazy dump %s: %.3fs to serve pages", rec.key, time.monotonic() - t0)
        return rec

    def _serve_lazy_again(self, rec: PodRecord) -> None:
        """After an agent restart: the relay of a lazy dump still serving, same port and
        key, so the sealed image already sent still describes it."""
        info = rec.lazy
        try:
            key = base64.b64decode(str(info["relay_key"]), validate=True)
            context = lazy.lazy_context(rec.namespace, rec.name, rec.uid,
                                        str(info["stream_id"]))
            ref = PodRef(rec.namespace, rec.name)
            relay = lazy.Relay(node_netns=self.net.netns, address=self.net.address,
                               pod_netns=rec.netns, criu_port=int(info["criu_port"]),
                               key=key, context=context, on_pull=lambda: self.pull_hook(ref),
                               port=int(info["relay_port"]))
        except (KeyError, ValueError, TypeError, OSError) as exc:
            log.warning("cannot serve the lazy pages of %s again: %s", rec.key, exc)
            return
        self._lazy[rec.key] = _LazyDump(None, int(info.get("pid", 0)),
                                        int(info.get("start", 0)), relay)

    def _lazy_dump_alive(self, rec: PodRecord) -> bool:
        dump = self._lazy.get(rec.key)
        if dump is not None:
            return dump.alive()
        return bool(rec.lazy) and nets.proc_alive(int(rec.lazy.get("pid", 0)),
                                                  int(rec.lazy.get("start", 0)))

    def _wait_lazy_served(self, rec: PodRecord) -> None:
        """Commit on the source: the pod's memory leaves with the lazy dump; wait for it."""
        dump = self._lazy.pop(rec.key, None)
        if dump is not None:
            if not dump.relay.pulled.is_set():  # nobody pulls (or will): nothing to wait for
                dump.relay.close()
                dump.stop()
            elif not dump.wait(CRIU_TIMEOUT_S):
                log.warning("lazy dump of %s still serving after %.0fs: stopping it",
                            rec.key, CRIU_TIMEOUT_S)
                dump.stop()
            dump.relay.close()
        elif rec.lazy:
            nets.wait_for(lambda: not self._lazy_dump_alive(rec), CRIU_TIMEOUT_S, 0.05)
        self._keep_log(self._pod_dir(rec) / "lazy" / "dump.log", "dump", rec)

    def _resume_lazy(self, rec: PodRecord) -> None:
        """Rollback of a lazy dump nobody pulled: restore the pod on this node from CRIU's
        own page server, into a fresh namespace with the same IP and MAC (the frozen tasks
        and CRIU's copies of their sockets hold the old one until the dump ends)."""
        dump = self._lazy.get(rec.key)
        if dump is not None:
            dump.relay.close()
            if dump.relay.pulled.is_set():
                raise conflict("committed", f"the destination pulls the pages of {rec.key}")
        if not self._lazy_dump_alive(rec):
            raise ApiError(500, "criu_failed", f"pod {rec.key} cannot be resumed: its lazy "
                           "dump is gone")
        old = self._podnet(rec)
        netns, veth = self._new_names(PodRef(rec.namespace, rec.name),
                                      f"resume-{os.urandom(4).hex()}")
        rec.lazy["old_netns"], rec.lazy["old_veth"] = old.netns, old.host_veth
        rec.netns, rec.host_veth = netns, veth
        self.pods.save(rec)
        nets.create_pod_net(self._podnet(rec), gated=True)
        pod_dir = self._pod_dir(rec)
        proc = self._start_lazy_daemon(old.netns, int(rec.lazy["criu_port"]),
                                       pod_dir / "lazy", pod_dir / "lazy-work")
        try:
            self._restore_into(rec, pod_dir, "lazy", fresh=True, keep=True,
                               lazy_work=pod_dir / "lazy-work")
        except BaseException:
            lazy.stop_process(proc)
            nets.delete_pod_net(self._podnet(rec))
            rec.netns, rec.host_veth, rec.state = old.netns, old.host_veth, "frozen"
            rec.lazy.pop("old_netns", None)
            self.pods.save(rec)
            raise
        self._lazy.pop(rec.key, None)
        threading.Thread(target=self._after_lazy_resume, args=(rec, old, proc, dump),
                         daemon=True, name=f"lazy-resume-{rec.key}").start()

    def _after_lazy_resume(self, rec: PodRecord, old: nets.PodNet,
                           daemon: subprocess.Popen[bytes], dump: _LazyDump | None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(CRIU_TIMEOUT_S)
        if dump is not None:
            dump.wait(30)
        nets.delete_pod_net(old)
        with self._pod_lock(PodRef(rec.namespace, rec.name)):
            cur = self.pods.get(rec.namespace, rec.name)
            if cur is not None and cur.lazy.get("old_netns") == old.netns:
                shutil.rmtree(self._pod_dir(cur), ignore_errors=True)
                cur.lazy, cur.dump_dir, cur.work_dir = {}, "", ""
                self.pods.save(cur)

    def _start_lazy_daemon(self, netns: str, port: int, images: Path,
                           work: Path) -> subprocess.Popen[bytes]:
        """`criu lazy-pages` fetching from 127.0.0.1:`port` in `netns`; ready to serve a
        `restore --lazy-pages -W work` once its socket exists."""
        shutil.rmtree(work, ignore_errors=True)
        ensure_private_dir(work)
        cmd = self.tool.command(["lazy-pages", "--page-server", "--address", "127.0.0.1",
                                 "--port", str(port), "-D", str(images), "-W", str(work),
                                 "-o", str(work / "lazy-pages.log")], netns)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        if not lazy.wait_socket(work / "lazy-pages.socket", proc):
            lazy.stop_process(proc)
            raise ApiError(500, "criu_failed", "criu lazy-pages did not start: "
                           f"{_tail(work / 'lazy-pages.log')}")
        return proc

    def _restore_lazy(self, manifest: dict[str, Any], rec: PodRecord, unpack: Path) -> None:
        """Destination of a post-copy move: relay CRIU's lazy-pages daemon (loopback in the
        gated pod namespace) to the source's relay, then `criu restore --lazy-pages`."""
        info = manifest["lazy"]
        try:
            address, port = str(info["address"]), int(info["port"])
            key = base64.b64decode(str(info["key"]), validate=True)
            context = lazy.lazy_context(rec.namespace, rec.name, rec.uid,
                                        str(info["stream_id"]))
        except (KeyError, ValueError, TypeError):
            raise ApiError(422, "image_invalid", "bad lazy pages description") from None
        # A spare namespace gets its address while CRIU's lazy-pages daemon starts in it.
        spare = nets.netns_exists(rec.netns)
        bring_up = _Job(lambda: self._bring_up(rec)) if spare else None
        try:
            if bring_up is None:
                self._bring_up(rec)
            pull = lazy.Pull(pod_netns=rec.netns, node_netns=self.net.netns,
                             address=address, port=port, key=key, context=context)
        except BaseException:
            if bring_up is not None:
                with contextlib.suppress(BaseException):
                    bring_up.join()
            raise
        work = unpack / "lazy-work"
        try:
            proc = self._start_lazy_daemon(rec.netns, pull.port,
                                           unpack / str(manifest["restore_dir"]), work)
        except BaseException:
            pull.close()
            if bring_up is not None:
                with contextlib.suppress(BaseException):
                    bring_up.join()
            raise
        self._pulls[rec.key] = _LazyPull(proc, pull, unpack)
        try:
            if bring_up is not None:
                bring_up.join()
            self._restore_into(rec, unpack, str(manifest["restore_dir"]), fresh=True,
                               lazy_work=work)
        except BaseException:
            self._stop_pull(rec.key)
            raise
        threading.Thread(target=self._after_pull, args=(rec, self._pulls[rec.key]),
                         daemon=True, name=f"lazy-pull-{rec.key}").start()

    def _after_pull(self, rec: PodRecord, job: _LazyPull) -> None:
        t0 = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            job.proc.wait(CRIU_TIMEOUT_S)
        log.info("lazy pages of %s: all received %.3fs after restore (daemon exit %s%s)",
                 rec.key, time.monotonic() - t0, job.proc.returncode,
                 f", relay: {job.pull.error}" if job.pull.error else "")
        self._keep_log(job.unpack / "lazy-work" / "lazy-pages.log", "lazy-pages", rec)
        if self._pulls.get(rec.key) is job:
            self._stop_pull(rec.key)

    def _stop_pull(self, key: str) -> None:
        job = self._pulls.pop(key, None)
        if job is not None:
            lazy.stop_process(job.proc)
            job.pull.close()
            shutil.rmtree(job.unpack, ignore_errors=True)

    def lazy_pending(self, ref: PodRef) -> bool:
        """Are pages of this pod still on their way (destination) or being served (source)?"""
        job = self._pulls.get(ref.key)
        if job is not None and job.proc.poll() is None:
            return True
        dump = self._lazy.get(ref.key)
        return dump is not None and dump.alive()

    def _manifest(self, rec: PodRecord) -> dict[str, Any]:
        return {
            "namespace": rec.namespace, "name": rec.name, "uid": rec.uid,
            "ip": rec.ip, "prefix": rec.prefix, "mac": rec.mac, "port": rec.port,
            "subnet": self.net.subnet, "subnet_id": self.net.subnet_id,
            "architecture": self.architecture, "source_node": self.node,
            "token": rec.token, "counter": rec.counter, "memory_bytes": rec.memory_bytes,
            "dirty_rate_bytes": rec.dirty_rate_bytes, "labels": rec.labels,
            "criu_version": self.caps.version,
        }

    def _stop_page_server(self, key: str) -> None:
        server = self._page_servers.pop(key, None)
        if server is not None:
            server.close()

    def _dump(self, rec: PodRecord, *, use_precopy: bool) -> PodRecord:
        """Dump (and so stop) a running pod; cut it from the bridge. Returns the record."""
        pod_dir = ensure_private_dir(self._pod_dir(rec))
        if not use_precopy and rec.precopy_dirs:
            for d in rec.precopy_dirs:
                shutil.rmtree(pod_dir / d, ignore_errors=True)
            rec.precopy_dirs = []
        t0 = time.monotonic()
        stats = query_stats(rec.netns, rec.ip, rec.port, timeout=1.0)
        if stats is not None:
            rec.token = str(stats.get("token", rec.token))
            if isinstance(stats.get("count"), int):
                rec.counter = stats["count"]
        name = "final" if rec.precopy_dirs else "dump"
        target = pod_dir / name
        shutil.rmtree(target, ignore_errors=True)
        ensure_private_dir(target)
        rec.state, rec.dump_dir, rec.work_dir = "freezing", name, str(pod_dir)
        self.pods.save(rec)
        args = ["dump", "-t", str(rec.pid), "-D", str(target), "--tcp-established",
                "--skip-in-flight", "--shell-job", "--network-lock", "nftables",
                "-o", "dump.log"]
        if rec.precopy_dirs:
            args += ["--track-mem", "--prev-images-dir", f"../{rec.precopy_dirs[-1]}"]
        t1 = time.monotonic()
        res = self.tool.run(args, netns=rec.netns)
        t2 = time.monotonic()
        self._keep_log(target / "dump.log", "dump", rec)
        if res.returncode != 0:
            why = _tail(target / "dump.log") or res.stderr.strip()
            if rec.alive():  # CRIU resumed the pod: nothing changed
                rec.state, rec.dump_dir = "running", ""
                self.pods.save(rec)
                shutil.rmtree(target, ignore_errors=True)
            raise ApiError(500, "criu_failed", f"criu dump of {rec.key} failed: {why}")
        # The tasks are gone; CRIU's nftables lock stays in the pod's namespace. Its IP
        # and MAC must not answer while the destination brings them up.
        nets.set_host_link(self._podnet(rec), False)
        nets.reap(rec.pid)
        rec.state = "frozen"
        self.pods.save(rec)
        log.info("dump %s: stats %.3fs, criu dump %.3fs, unlink %.3fs", rec.key, t1 - t0,
                 t2 - t1, time.monotonic() - t2)
        return rec

    def link_delay(self, nbytes: int, slowdown: float) -> float:
        return 0.0

    # -- Runtime: destination ----------------------------------------------------------------
    def restore(self, ref: PodRef, uid: str, mid: str, image: Iterable[bytes],
                slowdown: float) -> tuple[PodInfo, str]:
        with self._pod_lock(ref):
            existing = self.pods.get(ref.namespace, ref.name)
            if existing is not None and self._state(existing) is None:
                self._teardown(existing)  # a pod whose process died is no pod: clear it
                existing = None
            if existing is not None and existing.restored_by != mid:
                raise conflict("pod_exists", f"pod {ref.key} already exists on this node")
            if existing is not None and self._state(existing) == "running":
                return self._info(existing, "running"), existing.restored_sha256
            if existing is not None:  # a half-finished restore of this migration: redo it
                self._teardown(existing)
            unpack = self.work / f"restore-{mid}"
            shutil.rmtree(unpack, ignore_errors=True)
            try:
                t0 = time.monotonic()
                manifest, sha, _ = archive.read_archive(image, unpack)
                rec = self._check_manifest(manifest, ref, uid, mid, sha)
                self.pods.save(rec)
                t1 = time.monotonic()
                if manifest.get("lazy"):
                    try:
                        self._restore_lazy(manifest, rec, unpack)
                    except BaseException:
                        self._teardown(rec)
                        raise
                    log.info("lazy restore %s: image %.3fs, up and running %.3fs", ref.key,
                             t1 - t0, time.monotonic() - t1)
                    # no probe: its memory is still arriving, and verify asks the pod anyway
                    return self._info(rec, "running", probe=False), sha
                try:
                    # The pod's network comes up (gated) while its pages arrive.
                    bring_up = _Job(lambda: self._bring_up(rec))
                    try:
                        nbytes = self._fetch_pages(manifest, rec, unpack)
                    finally:
                        bring_up.join()
                    t2 = time.monotonic()
                    log.info("restore %s: image %.3fs, pages %.3fs (%d MiB), network %.3fs",
                             ref.key, t1 - t0, t2 - t1, nbytes >> 20, bring_up.seconds)
                    self._restore_into(rec, unpack, str(manifest["restore_dir"]), fresh=True)
                except BaseException:
                    self._teardown(rec)
                    raise
            finally:
                if ref.key not in self._pulls:  # else the lazy-pages daemon still reads it
                    shutil.rmtree(unpack, ignore_errors=True)
            return self._info(rec, "running"), sha

    def _bring_up(self, rec: PodRecord) -> None:
        net = self._podnet(rec)
        if nets.netns_exists(net.netns):  # a spare from the pool
            nets.activate_pod_net(net)
        else:
            nets.create_pod_net(net, gated=True)

    def _fetch_pages(self, manifest: dict[str, Any], rec: PodRecord, unpack: Path) -> int:
        info = manifest.get("pages")
        if not info:
            return 0  # the pages were inside the image
        if not isinstance(info, dict):
            raise ApiError(422, "image_invalid", "bad page stream description in image")
        try:
            return pages.fetch_pages(info, netns=self.net.netns, dest=unpack,
                                     namespace=rec.namespace, name=rec.name, uid=rec.uid)
        except ImageCorrupt as exc:
            raise ApiError(422, "image_corrupt", f"page stream: {exc}") from None

    def _check_manifest(self, m: dict[str, Any], ref: PodRef, uid: str, mid: str,
                        sha: str) -> PodRecord:
        if (m.get("namespace"), m.get("name"), m.get("uid")) != (ref.namespace, ref.name, uid):
            raise ApiError(422, "image_invalid", "image belongs to another pod")
        for key in ("ip", "mac", "restore_dir"):
            if not isinstance(m.get(key), str) or not m[key]:
                raise ApiError(422, "image_invalid", f"image manifest lacks {key}")
        arch = str(m.get("architecture", ""))
        if arch and self.architecture and arch != self.architecture:
            raise conflict("architecture_mismatch", f"pod {ref.key} was checkpointed on "
                           f"{arch}; this node is {self.architecture}")
        if not nets.ip_in_subnet(m["ip"], self.net.subnet):
            raise conflict("subnet_mismatch", f"pod {ref.key} has IP {m['ip']} (subnet "
                           f"{m.get('subnet_id') or m.get('subnet')}); this node is in "
                           f"{self.net.subnet_id} ({self.net.subnet}): the pod could not "
                           "keep its address here")
        spare = self._take_spare()
        netns, veth = spare if spare is not None else self._new_names(ref, mid)
        labels = m.get("labels")
        return PodRecord(
            namespace=ref.namespace, name=ref.name, uid=uid, netns=netns, host_veth=veth,
            ip=m["ip"], prefix=int(m.get("prefix", 24)), mac=m["mac"],
            port=int(m.get("port", 0)), memory_bytes=int(m.get("memory_bytes", 0)),
            dirty_rate_bytes=int(m.get("dirty_rate_bytes", 0)), state="restoring",
            restored_by=mid, restored_sha256=sha, token=str(m.get("token", "")),
            counter=int(m.get("counter", 0)), created_at=time.time(),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict)
            else {})

    def _restore_into(self, rec: PodRecord, images: Path, restore_dir: str, *,
                      fresh: bool, keep: bool = False, lazy_work: Path | None = None) -> None:
        """Run `criu restore` for `rec` from `images/restore_dir`: in its new, gated
        namespace (`fresh`, destination: `_bring_up` made it) or in the pod's own namespace
        (rollback on the source)."""
        net = self._podnet(rec)
        self.pods.save(rec)
        pidfile = images / f"restored-{time.monotonic_ns()}.pid"
        t1 = time.monotonic()
        try:
            args = ["restore", "-D", str(images / restore_dir), "--tcp-established",
                    "--shell-job", "-d", "--pidfile",
                    str(pidfile), "-o", "restore.log"]
            if lazy_work is not None:
                args += ["--lazy-pages", "-W", str(lazy_work)]
            res = self.tool.run(args, netns=rec.netns)
            self._keep_log(images / restore_dir / "restore.log", "restore", rec)
            if res.returncode != 0:
                why = _tail(images / restore_dir / "restore.log") or res.stderr.strip()
                raise ApiError(500, "criu_failed", f"criu restore of {rec.key} failed: {why}")
            t2 = time.monotonic()
            pid = self._read_pid(pidfile)
            rec.pid, rec.pid_start = pid, nets.proc_start_time(pid) or 0
            if fresh:
                nets.gate_open(rec.netns)
                nets.send_garp(net.netns, net.ifname, net.ip, net.mac, count=1)
            else:
                nets.set_host_link(net, True)
                nets.announce(net)
            rec.state = "running"
            self.pods.save(rec)
            log.info("restore %s: criu restore %.3fs, open %.3fs", rec.key, t2 - t1,
                     time.monotonic() - t2)
        except BaseException:
            if fresh and not keep:
                self._teardown(rec)
            raise

    def _read_pid(self, pidfile: Path) -> int:
        ok = nets.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "",
                           RESTORE_PID_TIMEOUT_S)
        if not ok:
            raise ApiError(500, "criu_failed", "criu restore wrote no pid file")
        return int(pidfile.read_text().strip())

    def verify(self, ref: PodRef, mid: str, state_sha256: str) -> VerifyResult:
        rec = self.pods.get(ref.namespace, ref.name)
        if rec is None:
            return VerifyResult(False, 0, "pod is not on this node")
        if rec.restored_by != mid:
            return VerifyResult(False, rec.counter, "pod was not restored by this migration")
        if rec.state != "running" or not rec.alive():
            return VerifyResult(False, rec.counter, f"pod is {rec.state}, process "
                                f"{'alive' if rec.alive() else 'gone'}")
        if rec.restored_sha256 != state_sha256:
            return VerifyResult(False, rec.counter, "pod state does not match the image")
        if not rec.port:
            return VerifyResult(True, rec.counter, "")
        stats = query_stats(rec.netns, rec.ip, rec.port, timeout=2.0)
        if stats is None:
            return VerifyResult(False, rec.counter, "pod does not answer on its port")
        count = stats.get("count")
        if not isinstance(count, int):
            return VerifyResult(False, rec.counter, "pod stats lack a counter")
        if rec.token and stats.get("token") != rec.token:
            return VerifyResult(False, count, "pod answers with another identity (restarted, "
                                "not restored)")
        if count < rec.counter:
            return VerifyResult(False, count, f"counter went backwards ({rec.counter} -> "
                                f"{count})")
        return VerifyResult(True, count, "")

    # -- Runtime: both ----------------------------------------------------------------------
    def resume(self, ref: PodRef) -> PodInfo | None:
        with self._pod_lock(ref):
            rec = self.pods.get(ref.namespace, ref.name)
            if rec is None:
                return None
            self._stop_page_server(ref.key)
            if rec.state in ("frozen", "freezing") and rec.lazy and \
                    self._lazy_dump_alive(rec):
                self._resume_lazy(rec)
            elif rec.state in ("frozen", "freezing"):
                if rec.alive():  # the dump never stopped it
                    rec.state = "running"
                    nets.set_host_link(self._podnet(rec), True)
                    self.pods.save(rec)
                else:
                    pod_dir = self._pod_dir(rec)
                    if not (pod_dir / rec.dump_dir / "inventory.img").exists():
                        raise ApiError(500, "criu_failed", f"pod {ref.key} cannot be resumed: "
                                       "its images are gone")
                    self._restore_into(rec, pod_dir, rec.dump_dir, fresh=False)
                    shutil.rmtree(pod_dir, ignore_errors=True)
                    rec.dump_dir, rec.precopy_dirs, rec.work_dir = "", [], ""
                    rec.page_stream = {}
                    self.pods.save(rec)
            state = self._state(rec)
            return None if state is None else self._info(rec, state)

    def remove(self, ref: PodRef, uid: str) -> bool:
        with self._pod_lock(ref):
            rec = self.pods.get(ref.namespace, ref.name)
            if rec is None:
                return False
            if rec.uid != uid:
                raise conflict("uid_mismatch", f"pod {ref.key} has another uid; not removed")
            self._teardown(rec)
            return True

    def _teardown(self, rec: PodRecord) -> None:
        """Kill the pod, delete its namespace, images and record (on a source, after its
        lazy dump served every page)."""
        self._stop_page_server(rec.key)
        self._stop_pull(rec.key)
        if rec.lazy and rec.state in ("frozen", "freezing"):
            self._wait_lazy_served(rec)
        if rec.lazy.get("old_netns"):
            nets.delete_pod_net(nets.PodNet(
                netns=str(rec.lazy["old_netns"]), node_netns=self.net.netns,
                bridge=self.net.bridge, host_veth=str(rec.lazy.get("old_veth", "")),
                ip=rec.ip, prefix=rec.prefix, mac=rec.mac))
        if rec.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)
            nets.wait_for(lambda: not rec.alive(), 5.0)
        nets.reap(rec.pid)
        nets.delete_pod_net(self._podnet(rec))
        shutil.rmtree(self._pod_dir(rec), ignore_errors=True)
        self.pods.delete(rec.namespace, rec.name)


@dataclass
class _LazyDump:
    """A lazy dump serving a pod's pages: our child, or (after an agent restart) a pid."""

    proc: subprocess.Popen[bytes] | None
    pid: int
    start: int
    relay: lazy.Relay

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return nets.proc_alive(self.pid, self.start)

    def wait(self, timeout: float) -> bool:
        """True once the dump ended (it does when the last page was served)."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return nets.wait_for(lambda: not self.alive(), timeout, 0.05)

    def stop(self) -> None:
        if self.proc is not None:
            lazy.stop_process(self.proc)
        elif self.alive():
            nets.kill_and_wait([self.pid])


@dataclass
class _LazyPull:
    proc: subprocess.Popen[bytes]
    pull: lazy.Pull
    unpack: Path


class _Job:
    """Run `fn` in a thread; `join()` then `result()` re-raises what it raised."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn = fn
        self._error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self._fn()
        except BaseException as exc:
            self._error = exc
        self.seconds = time.monotonic() - started

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _not_pages(name: str) -> bool:
    return not pages.is_pages(name)
