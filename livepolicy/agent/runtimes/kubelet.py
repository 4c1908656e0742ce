"""`kubelet`: live migration on real Kubernetes nodes, through the kubelet and containerd 2.

The runtime an agent runs on an EKS (or any kubelet + containerd) node; see
docs/kubelet-runtime.md for the setup and the flow. In short:

- `checkpoint` (source): one kubelet checkpoint call per container of the pod
  (`kubelet_api`), then `ctr tasks pause` on every container, then the archives, with
  the pod object, go as one tar stream into the agent's encrypting sink, and the
  kubelet's plaintext archives are deleted.
- `restore` (destination): each archive becomes an OCI checkpoint image streamed into
  `ctr images import` (`kubelet_image`), then a copy of the pod is created through the
  API on this node with those images (`kubelet_pods`); containerd's CRI restores the
  containers from them. It must be running (all containers, no restart) to count.
- `verify` checks that, then removes the checkpoint images (they hold process memory).
- `resume` (rollback on the source) unpauses the containers: the source pod was never
  deleted, only paused. `remove` on the source (the commit) kills and deletes the
  source pod and hands its labels and owners to the restored copy; on the destination
  (rollback) it deletes the restored copy.

Freeze semantics, honestly: a kubelet checkpoint does not stop the container (KEP-2008 is
*forensic* checkpointing: CRIU dumps and leaves it running). So the Protocol's "freeze"
is mapped onto a cgroup-freezer pause right after the last container's checkpoint: what
the pod does between its checkpoint and the pause (milliseconds to seconds) is not in the
image and is lost at commit. Rollback loses nothing. Pre-copy is not offered (the
kubelet API has no incremental dump). The restored pod is a new pod sandbox with a new
IP, and a pod holding a TCP connection cannot be moved, unless the node keeps addresses
(`addresses`, kubelet_address.py): then the source's network is cut from just before
its checkpoint, the copy gets the source's IP from the project's CNI IPAM plugin, and
CRIU (`tcp-established`) carries the connections over.

Tested twice: fast, against a fake kubelet (real HTTPS, recorded responses), a fake `ctr`
and the real kube-apiserver; and for real, on two kubelets with their own containerd 2.3
(tests/nodes, docs/node-testenv.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from livepolicy.agent.crypto import Sink
from livepolicy.agent.errors import ApiError, conflict, not_found
from livepolicy.agent.fsutil import atomic_write_bytes, ensure_private_dir
from livepolicy.agent.keyed_locks import KeyedLocks
from livepolicy.agent.runtimes import kubelet_pods as kp
from livepolicy.agent.runtimes import kubelet_stream as ks
from livepolicy.agent.runtimes.base import (
    Features,
    PodInfo,
    PodRef,
    PodState,
    RoundResult,
    VerifyResult,
)
from livepolicy.agent.runtimes.kubelet_address import PodAddresses
from livepolicy.agent.runtimes.kubelet_api import KubeletClient
from livepolicy.agent.runtimes.kubelet_image import (
    ContainerdImages,
    ContainerdInfo,
    write_oci_layout,
)
from livepolicy.kube.errors import KubeError

log = logging.getLogger("livepolicy.agent.kubelet")

RECORDS_FILE = "records.json"
CAPABILITIES_FILE = "runtime-capabilities.json"
_ARCHIVE = re.compile(r"checkpoint-[A-Za-z0-9._:+-]+\.tar")


def image_ref(namespace: str, name: str, container: str, mid: str) -> str:
    tag = hashlib.sha256(mid.encode()).hexdigest()[:16]
    return f"localhost/livepolicy/checkpoint-{namespace}-{name}-{container}:{tag}"


class KubeletRuntime:
    """Pods of one Kubernetes node, moved with the kubelet checkpoint API and containerd."""

    name = "kubelet"

    def __init__(self, *, state_dir: Path, node: str, kubelet: KubeletClient,
                 containerd: ContainerdImages, pods: kp.PodApi, checkpoints_dir: Path,
                 architecture: str, checkpoint_timeout_s: int = 600,
                 restore_timeout_s: float = 120.0, fault_injection: bool = False,
                 containerd_info: ContainerdInfo | None = None,
                 addresses: PodAddresses | None = None,
                 stop: threading.Event | None = None) -> None:
        self.node = node
        self.kubelet = kubelet
        self.ctr = containerd
        self.api = pods
        self.checkpoints_dir = checkpoints_dir
        self.architecture = architecture
        self.checkpoint_timeout_s = checkpoint_timeout_s
        self.restore_timeout_s = restore_timeout_s
        self._stop = stop or threading.Event()
        self.addresses = addresses
        self.work = ensure_private_dir(state_dir / "kubelet")
        self._lock = threading.Lock()
        self._pod_locks = KeyedLocks()
        self.info = containerd_info or containerd.detect()
        if not self.info.restore:
            log.warning("this node cannot restore pods (destination role refused): %s",
                        self.info.reason)
        keeps = addresses is not None
        self._features = Features(dirty_tracking=False, post_copy=False,
                                  tcp_established=keeps, fault_injection=fault_injection)
        self._records: dict[str, dict[str, Any]] = self._load()
        atomic_write_bytes(state_dir / CAPABILITIES_FILE, json.dumps(
            {**self.info.to_json(), "runtime": self.name, "node": node,
             "kubelet": kubelet.url, "architecture": architecture,
             "features": {"dirty_tracking": False, "post_copy": False,
                          "tcp_established": keeps, "restore": self.info.restore}},
            indent=1, sort_keys=True).encode())

    # -- plumbing ----------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads((self.work / RECORDS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.work / RECORDS_FILE}: {exc}") from None
        return {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}

    def _save(self, key: str, rec: dict[str, Any] | None) -> None:
        with self._lock:
            if rec is None:
                self._records.pop(key, None)
            else:
                self._records[key] = rec
            body = json.dumps(self._records, indent=1, sort_keys=True).encode()
            atomic_write_bytes(self.work / RECORDS_FILE, body)

    def _rec(self, ref: PodRef) -> dict[str, Any] | None:
        with self._lock:
            rec = self._records.get(ref.key)
            return dict(rec) if rec is not None else None

    def _pod_lock(self, ref: PodRef) -> AbstractContextManager[None]:
        return self._pod_locks.hold(ref.key)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except KubeError as exc:
            raise ApiError(502, "kube_api_failed", f"{what}: {exc}") from None

    def _here(self, ref: PodRef) -> kp.Pod | None:
        pod = self._call(f"reading pod {ref.key}", self.api.get, ref.namespace, ref.name)
        if pod is None or (pod.get("spec") or {}).get("nodeName") != self.node:
            return None
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return None
        return dict(pod)

    def _info(self, pod: kp.Pod, state: PodState, *, ref: PodRef | None = None,
              uid: str = "", restored_by: str | None = None) -> PodInfo:
        meta = pod.get("metadata") or {}
        return PodInfo(namespace=ref.namespace if ref else str(meta.get("namespace")),
                       name=ref.name if ref else str(meta.get("name")),
                       uid=uid or str(meta.get("uid")), state=state,
                       memory_bytes=kp.memory_bytes(pod), dirty_rate_bytes=0, counter=0,
                       restored_by=restored_by)

    def _local_archive(self, reported: str) -> Path:
        """The kubelet's archive path, as mounted in this agent; refuses anything odd."""
        base = reported.rsplit("/", 1)[-1]
        if not _ARCHIVE.fullmatch(base):
            raise ApiError(502, "checkpoint_failed", f"unexpected archive path {reported!r}")
        path = self.checkpoints_dir / base
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise ApiError(500, "checkpoint_failed", f"the kubelet's archive {base} is not "
                           f"in {self.checkpoints_dir} ({exc}): mount the kubelet's "
                           "checkpoints directory into the agent") from None
        if not stat.S_ISREG(st.st_mode):
            raise ApiError(500, "checkpoint_failed", f"{path} is not a regular file")
        return path

    # -- Runtime: node ---------------------------------------------------------------------
    def features(self) -> Features:
        return self._features

    def list_pods(self) -> list[PodInfo]:
        self._sweep_addresses()
        pods = self._call(f"listing pods on {self.node}", self.api.list_on_node, self.node)
        out = []
        for pod in pods:
            ref = PodRef(str(pod["metadata"]["namespace"]), str(pod["metadata"]["name"]))
            info = self.get_pod(ref)
            if info is not None:
                out.append(info)
        return out

    def _sweep_addresses(self) -> None:
        """Releases the kept addresses of pods that moved away once no pod holds them."""
        if self.addresses is None:
            return
        for container_id, address in self.addresses.held().items():
            if not self._call(f"finding the pods with address {address}",
                              self.api.with_address, address):
                self.addresses.release_held(container_id)

    def get_pod(self, ref: PodRef) -> PodInfo | None:
        rec = self._rec(ref)
        if rec is not None and rec["kind"] == "restored":
            pod = self._call(f"reading pod {rec['pod']}", self.api.get, ref.namespace,
                             rec["pod"])
            if pod is None:
                return None
            running, _ = kp.is_running(pod)
            return self._info(pod, "running" if running else "restoring", ref=ref,
                              uid=rec["uid"], restored_by=rec["mid"])
        pod = self._here(ref)
        if pod is None:
            if rec is not None and rec.get("state") == "frozen":  # commit half done
                return PodInfo(ref.namespace, ref.name, rec["uid"], "frozen", 0, 0, 0)
            return None
        if rec is not None and rec.get("state") == "frozen":
            return self._info(pod, "frozen")
        running = (pod.get("status") or {}).get("phase") == "Running"
        return self._info(pod, "running" if running else "restoring")

    def put_pod(self, ref: PodRef, uid: str, memory_bytes: int,
                dirty_rate_bytes: int) -> tuple[PodInfo, bool]:
        info = self.get_pod(ref)
        if info is None:
            raise not_found("pod_not_found", f"no pod {ref.key} runs on {self.node}: the "
                            "kubelet runtime adopts pods that Kubernetes placed here")
        if info.uid != uid:
            raise conflict("pod_exists", f"pod {ref.key} exists with another uid")
        return info, False

    # -- Runtime: source ---------------------------------------------------------------------
    def precopy(self, ref: PodRef, *, previous_dirty_bytes: int | None,
                slowdown: float) -> RoundResult:
        raise conflict("dirty_tracking_unavailable", "the kubelet checkpoint API has no "
                       "incremental dump: only final (stop-and-copy) checkpoints")

    def checkpoint(self, ref: PodRef, sink: Sink, *, previous_dirty_bytes: int | None,
                   slowdown: float) -> RoundResult:
        with self._pod_lock(ref):
            pod = self._here(ref)
            if pod is None:
                raise not_found("pod_not_found", f"pod {ref.key} is not on {self.node}")
            uid = str(pod["metadata"]["uid"])
            names, ids = kp.container_names(pod), kp.container_ids(pod)
            if any(n not in ids for n in names):
                raise conflict("pod_not_running", f"pod {ref.key} has containers without "
                               "a container id (not started)")
            rec = self._rec(ref)
            if rec is not None and rec.get("state") == "frozen":
                # Checkpointed before but never recorded by the agent (a crash): the
                # kubelet checkpoints running containers, so thaw and take a fresh one
                # (a crash before the pause left them running: nothing to thaw).
                for n in names:
                    with contextlib.suppress(ApiError):
                        self.ctr.resume(ids[n])
            started = time.monotonic()
            archives: dict[str, Path] = {}
            new: dict[str, Any] = {"kind": "source", "state": "frozen", "uid": uid,
                                   "containers": ids}
            try:
                try:
                    if self.addresses is not None:
                        new["isolated"] = self.ctr.task_pid(ids[names[0]])
                        self._save(ref.key, new)  # first: a crash still knows to lift it
                        self.addresses.isolate(new["isolated"])
                    for n in names:
                        path = self.kubelet.checkpoint(ref.namespace, ref.name, n,
                                                       self.checkpoint_timeout_s)
                        archives[n] = self._local_archive(path)
                    self._save(ref.key, new)
                    self._freeze(names, ids)
                except BaseException:
                    self._thaw(ref, new, paused=False)  # _freeze undoes its own pauses
                    raise
                frozen_for = time.monotonic()
                nbytes = ks.write_pod_stream(sink, pod, names, archives, node=self.node,
                                             architecture=self.architecture)
                log.info("checkpoint %s: %d containers, %d bytes, %.3fs (%.3fs frozen)",
                         ref.key, len(names), nbytes, time.monotonic() - started,
                         time.monotonic() - frozen_for)
            finally:
                for archive in archives.values():
                    with contextlib.suppress(OSError):
                        archive.unlink()
        return RoundResult(bytes=nbytes, dirty_bytes=0, seconds=time.monotonic() - started,
                           frozen=True)

    def _freeze(self, names: list[str], ids: dict[str, str]) -> None:
        paused: list[str] = []
        try:
            for n in names:
                self.ctr.pause(ids[n])
                paused.append(n)
        except ApiError:
            for n in paused:
                with contextlib.suppress(ApiError):
                    self.ctr.resume(ids[n])
            raise

    def _thaw(self, ref: PodRef, rec: dict[str, Any], *, paused: bool = True) -> None:
        """Undo a checkpoint: unpause, give the pod its network back, forget it."""
        if paused:
            for cid in (rec.get("containers") or {}).values():
                self.ctr.resume(str(cid))
        if self.addresses is not None and rec.get("isolated"):
            self.addresses.release(int(rec["isolated"]))
        self._save(ref.key, None)

    def link_delay(self, nbytes: int, slowdown: float) -> float:
        return 0.0

    # -- Runtime: destination ----------------------------------------------------------------
    def restore(self, ref: PodRef, uid: str, mid: str, image: Iterable[bytes],
                slowdown: float) -> tuple[PodInfo, str]:
        with self._pod_lock(ref):
            rec = self._rec(ref)
            if rec is not None and rec["kind"] == "restored":
                if rec["mid"] != mid:
                    raise conflict("pod_exists", f"pod {ref.key} was restored here by "
                                   f"migration {rec['mid']}")
                if rec.get("state") == "running":
                    pod = self._wait_running(ref, rec)
                    return self._info(pod, "running", ref=ref, uid=uid,
                                      restored_by=mid), str(rec["sha256"])
                self._undo_restore(ref, rec)  # half done before a crash: start again
            elif self._here(ref) is not None:
                raise conflict("pod_exists", f"pod {ref.key} already exists on this node")
            if not self.info.restore:
                raise ApiError(409, "restore_unavailable",
                               f"{self.node} cannot restore pods: {self.info.reason}")
            stream = ks.StreamFile(image)
            rec = {"kind": "restored", "mid": mid, "uid": uid, "state": "restoring",
                   "pod": kp.restored_name(ref.name, mid), "images": [], "sha256": ""}
            try:
                manifest = ks.read_pod_stream(
                    stream, ref, uid, self.architecture,
                    lambda name, src, entry: self._import_one(ref, name, mid, src, entry, rec))
                stream.drain()  # the last chunk is authenticated only at the very end
                rec["sha256"] = sha = stream.sha.hexdigest()
                source = manifest["pod"]
                images = {n: image_ref(ref.namespace, ref.name, n, mid)
                          for n in kp.container_names(source)}
                body = kp.restored_pod(source, name=rec["pod"], node=self.node,
                                       images=images, mid=mid, state_sha256=sha)
                address = manifest.get("pod_ip")
                if self.addresses is not None and isinstance(address, str) and address:
                    rec["address"] = address
                self._save(ref.key, rec)  # first: a crash still knows what to undo
                if self.addresses is not None and rec.get("address"):
                    self.addresses.reserve(ref.namespace, rec["pod"], rec["address"])
                created = self._call(f"creating pod {ref.namespace}/{rec['pod']}",
                                     self.api.create, ref.namespace, body)
                rec["api_uid"] = str((created.get("metadata") or {}).get("uid", ""))
                self._save(ref.key, rec)
                pod = self._wait_running(ref, rec)
                if self.addresses is not None and rec.get("address"):
                    # livepolicy-ipam gated the copy until its sockets were back: open it.
                    pid = self.ctr.task_pid(next(iter(kp.container_ids(pod).values())))
                    self.addresses.release(pid)
                    self.addresses.announce(pid, str(rec["address"]))
            except BaseException:
                self._undo_restore(ref, rec)
                raise
            rec["state"] = "running"
            self._save(ref.key, rec)
            return self._info(pod, "running", ref=ref, uid=uid, restored_by=mid), sha

    def _import_one(self, ref: PodRef, container: str, mid: str, src: IO[bytes],
                    entry: dict[str, Any], rec: dict[str, Any]) -> None:
        target = image_ref(ref.namespace, ref.name, container, mid)
        rec["images"].append({"container": container, "ref": target})
        self._save(ref.key, rec)  # recorded first: a crash still knows what to remove
        self.ctr.import_image(lambda out: write_oci_layout(
            out, container=container, image_ref=target, architecture=self.architecture,
            layer=src, layer_size=int(entry["size"]),
            layer_sha256=str(entry["sha256"])))

    def _wait_running(self, ref: PodRef, rec: dict[str, Any]) -> kp.Pod:
        deadline = time.monotonic() + self.restore_timeout_s
        why = "not created"
        while True:
            pod = self._call(f"reading pod {rec['pod']}", self.api.get, ref.namespace,
                             rec["pod"])
            if pod is not None:
                ok, why = kp.is_running(pod)
                if ok:
                    return dict(pod)
            if time.monotonic() > deadline or self._stop.wait(0.2):
                raise ApiError(500, "restore_failed", f"restored pod {ref.namespace}/"
                               f"{rec['pod']} is not running after {self.restore_timeout_s:.0f}"
                               f"s: {why}")

    def _undo_restore(self, ref: PodRef, rec: dict[str, Any]) -> None:
        with contextlib.suppress(ApiError, KubeError):
            pod = self.api.get(ref.namespace, rec["pod"])
            if pod is not None:
                self.api.delete(ref.namespace, rec["pod"], str(pod["metadata"]["uid"]))
        if self.addresses is not None and rec.get("address"):
            self.addresses.unreserve(ref.namespace, rec["pod"])
        for img in rec.get("images") or []:
            with contextlib.suppress(ApiError):
                self.ctr.remove_image(str(img["ref"]))
        self._save(ref.key, None)

    def verify(self, ref: PodRef, mid: str, state_sha256: str) -> VerifyResult:
        rec = self._rec(ref)
        if rec is None or rec["kind"] != "restored":
            return VerifyResult(False, 0, "pod was not restored on this node")
        if rec["mid"] != mid:
            return VerifyResult(False, 0, "pod was not restored by this migration")
        pod = self._call(f"reading pod {rec['pod']}", self.api.get, ref.namespace, rec["pod"])
        if pod is None:
            return VerifyResult(False, 0, f"restored pod {rec['pod']} is gone")
        ok, why = kp.is_running(pod)
        if not ok:
            return VerifyResult(False, 0, why)
        got = (pod.get("status") or {}).get("podIP")
        if rec.get("address") and got != rec["address"]:
            return VerifyResult(False, 0, f"restored pod {rec['pod']} has address {got}, not "
                                f"its source's {rec['address']}: is livepolicy-ipam the IPAM "
                                f"of {self.node}'s CNI configuration?")
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        if rec["sha256"] != state_sha256 or ann.get(kp.A_STATE) != state_sha256:
            return VerifyResult(False, 0, "pod state does not match the image")
        # Restored: containerd no longer needs the checkpoint images (process memory), nor
        # the plugin the reservation (the sandbox has its address).
        for img in rec.get("images") or []:
            self.ctr.remove_image(str(img["ref"]))
        if self.addresses is not None and rec.get("address"):
            self.addresses.unreserve(ref.namespace, rec["pod"])
        return VerifyResult(True, 0, "")

    # -- Runtime: both ----------------------------------------------------------------------
    def resume(self, ref: PodRef) -> PodInfo | None:
        with self._pod_lock(ref):
            rec = self._rec(ref)
            if rec is not None and rec["kind"] == "source" and rec.get("state") == "frozen":
                self._thaw(ref, rec)
            return self.get_pod(ref)

    def remove(self, ref: PodRef, uid: str) -> bool:
        with self._pod_lock(ref):
            rec = self._rec(ref)
            if rec is not None and rec["kind"] == "restored":
                if rec["uid"] != uid:
                    raise conflict("uid_mismatch", f"pod {ref.key} has another uid")
                self._undo_restore(ref, rec)
                return True
            pod = self._here(ref)
            if pod is not None and str(pod["metadata"]["uid"]) != uid:
                raise conflict("uid_mismatch", f"pod {ref.key} has another uid; not removed")
            # Hand over before deleting: a ReplicaSet that sees its pod deleted before the
            # copy is its own creates a replacement at once. Between the two steps it owns
            # both, and should it scale down then, the source goes first: it is the one
            # with the lowest deletion cost (and its containers are killed: not ready).
            removed = False
            address = (pod.get("status") or {}).get("podIP") if pod is not None else None
            if self.addresses is not None and rec is not None and rec.get("isolated") \
                    and address:
                # Its sandbox goes with the pod: keep its address off this node's pool.
                self.addresses.moved(ref.namespace, ref.name, address)
            if pod is not None:
                self._call(f"marking pod {ref.key} for removal", self.api.patch,
                           ref.namespace, ref.name, kp.LEAVING_PATCH)
                for cid in kp.container_ids(pod).values():
                    self.ctr.kill(cid)  # no shutdown hooks: the pod lives on elsewhere
            for restored in self._call("finding the restored copy", self.api.restored_from,
                                       ref.namespace, uid):
                self._call("handing over labels and owners", self.api.patch, ref.namespace,
                           restored["metadata"]["name"], kp.handover_patch(restored))
            if pod is not None:
                removed = self._call(f"deleting pod {ref.key}", self.api.delete,
                                     ref.namespace, ref.name, uid)
            self._save(ref.key, None)
            return removed or rec is not None
