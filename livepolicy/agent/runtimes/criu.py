"""`criu`: real checkpoint/restore of pod processes with CRIU, TCP connections included.

A pod is a process tree in its own network and pid namespaces, started by the node's
container runtime (the lab stands in for containerd and the CNI) and recorded in the
node's pods directory (see `criu_pods`). This runtime adopts such pods and moves them:

- `checkpoint` runs `criu dump --tcp-established --network-lock nftables` inside the
  pod's network namespace. The dump kills the process; its plaintext images stay in an
  owner-only directory of this node until commit or rollback, and the pod is cut from
  the node bridge (its IP and MAC must not answer while another node brings them up).
  The sealed image (the agent's encrypting sink: what leaves the node is AES-GCM sealed)
  holds a manifest (pod, IP, MAC, identity, counter) and how to pull the page stream,
  which carries CRIU's files to the destination, sealed, while the dump still writes them
  (`criu_stopcopy`, `criu_pages`).
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

The parts live beside this module: `criu_tool` (finding and running CRIU), `criu_caps`
(what CRIU, kernel and CPU support), `criu_node` (the state the parts share and the node
network), `criu_spares` (the warm pool of gated namespaces), `criu_stopcopy` (dump,
pre-dump, restore, verify) and `criu_postcopy` (lazy pages). `CriuRuntime` here ties them
together: start-up and crash recovery, the node's pods, resume and remove.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
from dataclasses import asdict
from pathlib import Path

from livepolicy.agent.errors import ApiError, conflict, not_found
from livepolicy.agent.fsutil import atomic_write_bytes, ensure_private_dir
from livepolicy.agent.keyed_locks import KeyedLocks
from livepolicy.agent.runtimes import criu_pages as pages
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.base import Features, PodInfo, PodRef
from livepolicy.agent.runtimes.criu_caps import CriuCapabilities
from livepolicy.agent.runtimes.criu_node import NodeNetwork
from livepolicy.agent.runtimes.criu_pods import PodRecord, PodStore
from livepolicy.agent.runtimes.criu_postcopy import PostCopy
from livepolicy.agent.runtimes.criu_spares import SPARES_FILE, CriuSpares
from livepolicy.agent.runtimes.criu_stopcopy import StopAndCopy
from livepolicy.agent.runtimes.criu_tool import CRIU_TIMEOUT_S, CriuTool, find_criu

__all__ = ["CriuCapabilities", "CriuRuntime", "CriuTool", "NodeNetwork", "find_criu"]

log = logging.getLogger("livepolicy.agent.criu")

CAPABILITIES_FILE = "runtime-capabilities.json"


class CriuRuntime(PostCopy, StopAndCopy, CriuSpares):
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
        self._pod_locks = KeyedLocks()
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
        self._page_servers = {}
        self._lazy = {}  # source: lazy dumps serving pages
        # asked when a destination starts pulling the pages of a dump served again after a
        # restart (the agent service sets it; until then such pulls are refused)
        self.pull_hook = lambda ref: False
        self._pulls = {}  # destination: lazy-pages daemons
        self._dumps = {}  # source: dumps still writing while their pages stream
        self._spares = []  # (netns, host veth), gated, unattached
        self._spare_wakeup = threading.Event()
        atomic_write_bytes(state_dir / CAPABILITIES_FILE, json.dumps(
            {**self.caps.to_json(), "node": node, "architecture": architecture,
             "features": asdict(self._features)}, indent=1, sort_keys=True).encode())
        self._recover()
        self._spare_thread = threading.Thread(target=self._keep_spares, daemon=True,
                                              name=f"criu-spares-{node}")
        self._spare_thread.start()

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
                if rec.dump_pid:  # a dump streaming its pages outlived the agent: let it end
                    _wait_gone(rec.dump_pid, rec.dump_start or None)
                    rec.dump_pid = rec.dump_start = 0
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
                        name=rec.name, uid=rec.uid, resume=rec.page_stream,
                        # a live stream's dump ended (it is frozen): all files, as live
                        outcome=(lambda: "") if rec.page_stream.get("live") else None)
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

    # -- Runtime: both ----------------------------------------------------------------------
    def resume(self, ref: PodRef) -> PodInfo | None:
        with self._pod_lock(ref):
            self._wait_dump(ref.key)
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
        self._wait_dump(rec.key)
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


def _wait_gone(pid: int, start: int | None) -> None:
    nets.wait_for(lambda: not nets.proc_alive(pid, start), CRIU_TIMEOUT_S, 0.05)
