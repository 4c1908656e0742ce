"""The state every part of the `criu` runtime shares, and the small helpers they all use.

`CriuRuntime` is assembled from layers (`criu_spares`, `criu_stopcopy`, `criu_postcopy`),
each a mixin over `CriuNode`: this base declares the attributes `CriuRuntime.__init__`
sets and the methods one layer calls in another, so each layer type-checks on its own
while the runtime's behaviour stays in one object (one lock, one pods directory, one
table of the page servers and lazy-pages processes it runs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livepolicy.agent.errors import ApiError, conflict, not_found
from livepolicy.agent.keyed_locks import KeyedLocks
from livepolicy.agent.runtimes import criu_lazy as lazy
from livepolicy.agent.runtimes import criu_pages as pages
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.base import Features, PodInfo, PodRef, PodState
from livepolicy.agent.runtimes.criu_caps import CriuCapabilities
from livepolicy.agent.runtimes.criu_pods import PodRecord, PodStore, query_stats
from livepolicy.agent.runtimes.criu_tool import CriuTool


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


class CriuNode:
    """What the layers of `CriuRuntime` share (set by `CriuRuntime.__init__`)."""

    node: str
    tool: CriuTool
    net: NodeNetwork
    architecture: str
    work: Path
    logs: Path
    pods: PodStore
    caps: CriuCapabilities
    _stop: threading.Event
    _lock: threading.Lock
    _pod_locks: KeyedLocks
    _features: Features
    _page_servers: dict[str, pages.PageServer]
    _lazy: dict[str, LazyDump]  # source: lazy dumps serving pages
    # asked when a destination starts pulling the pages of a dump served again after a
    # restart (the agent service sets it; until then such pulls are refused)
    pull_hook: Callable[[PodRef], bool]
    _pulls: dict[str, LazyPull]  # destination: lazy-pages daemons
    _dumps: dict[str, LiveDump]  # source: dumps still writing while their pages stream
    _spares: list[tuple[str, str]]  # (netns, host veth), gated, unattached
    _spare_wakeup: threading.Event
    _spare_thread: threading.Thread

    if TYPE_CHECKING:  # provided by the layers, called across them
        def _teardown(self, rec: PodRecord) -> None: ...
        def _take_spare(self) -> tuple[str, str] | None: ...
        def _bring_up(self, rec: PodRecord) -> None: ...
        def _restore_into(self, rec: PodRecord, images: Path, restore_dir: str, *,
                          fresh: bool, keep: bool = False,
                          lazy_work: Path | None = None) -> None: ...
        def _restore_lazy(self, manifest: dict[str, Any], rec: PodRecord,
                          unpack: Path) -> None: ...

    def _pod_lock(self, ref: PodRef) -> AbstractContextManager[None]:
        return self._pod_locks.hold(ref.key)

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
        self._wait_dump(ref.key)
        rec = self._need(ref)
        job = self._pulls.get(ref.key)
        if (job is not None and job.proc.poll() is None) or rec.lazy.get("old_netns"):
            raise conflict("pod_busy", f"pod {ref.key} is still receiving its memory "
                           "(post-copy): try again when it has all of it")
        return rec

    def _new_names(self, ref: PodRef, mid: str) -> tuple[str, str]:
        digest = hashlib.sha256(f"{self.node}/{ref.key}/{mid}".encode()).hexdigest()[:8]
        return f"{self.net.netns_prefix}{digest}", f"v{digest}"

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

    def _wait_dump(self, key: str) -> None:
        """Let a dump still running for pod `key` end (whoever changes the pod waits for
        it, under the pod's lock: the dump itself never takes that lock)."""
        job = self._dumps.pop(key, None)
        if job is not None:
            job.wait()

    def _stop_page_server(self, key: str) -> None:
        server = self._page_servers.pop(key, None)
        if server is not None:
            server.close()


@dataclass
class LazyDump:
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


class LiveDump:
    """A `criu dump` running in a thread of its own while its pages stream to the
    destination (`criu_pages`, live); `outcome()` is what the stream reports at its end."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn
        self._done = threading.Event()
        self.error = ""
        self._thread = threading.Thread(target=self._run, daemon=True, name="criu-dump")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._fn()
        except ApiError as exc:
            self.error = exc.message or exc.code
        except BaseException as exc:  # anything: the stream must still end, as failed
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._done.set()

    def outcome(self) -> str | None:
        """None while CRIU runs, "" once it dumped the pod, else why it failed."""
        return (self.error or "") if self._done.is_set() else None

    def wait(self) -> None:
        self._thread.join()


@dataclass
class LazyPull:
    proc: subprocess.Popen[bytes]
    pull: lazy.Pull
    unpack: Path


class Job:
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
