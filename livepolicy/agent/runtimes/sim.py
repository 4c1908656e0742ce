"""`sim`: a deterministic stand-in for CRIU, used by tests and the demo.

Each pod has a memory size, a dirty rate and a `counter`, its "in-memory state": it grows
by COUNTER_HZ per second of wall time while the pod runs and stops while it is frozen, so
a test can see that a migrated pod continues where it stopped and never goes backwards.

Durations follow the pre-copy model (Clark et al. 2005): round 0 sends all memory V,
round i sends what was dirtied during round i-1, i.e. V*(D/R)^i for dirty rate D and link
bandwidth R. Simulated seconds are slept for `seconds * time_scale` (tests use 0.001, so
a 1 GiB pod takes milliseconds) and reported unscaled, so they are deterministic.

The image is one JSON line with the pod's state followed by padding proportional to its
memory (capped); the agent encrypts it on the way out. Pods are persisted in
`<state_dir>/sim-state.json` after every change, atomically, so a crashed and restarted
agent still knows them, as a real node keeps its containers when its agent restarts.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from livepolicy.agent.crypto import Sink
from livepolicy.agent.errors import ApiError, conflict, not_found
from livepolicy.agent.fsutil import atomic_write_bytes, remove_stale_tmp
from livepolicy.agent.runtimes.base import (
    Features,
    PodInfo,
    PodRef,
    PodState,
    RoundResult,
    VerifyResult,
)

COUNTER_HZ = 1000
DISK_BYTES_PER_S = 2 * 2**30
FREEZE_OVERHEAD_S = 0.005
RESTORE_OVERHEAD_S = 0.010
PADDING_PER_BYTES = 1024  # image padding: 1 MiB per GiB of memory, capped
PADDING_CAP = 4 * 2**20
IMAGE_FORMAT = "livepolicy-sim/1"
STATE_FILE = "sim-state.json"
_PAD_PATTERN = b"livepolicy-sim-page\n"


@dataclass
class _Pod:
    namespace: str
    name: str
    uid: str
    memory_bytes: int
    dirty_rate_bytes: int
    state: PodState
    base_counter: int
    running_since: float | None
    restored_by: str | None = None
    restored_sha256: str | None = None
    restored_counter: int = 0


class SimRuntime:
    """In-memory pods with persisted state, deterministic timing and no real processes."""

    name = "sim"

    def __init__(
        self,
        *,
        state_dir: Path,
        node: str,
        time_scale: float,
        bandwidth_bytes: int,
        features: Features,
        max_image_bytes: int,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = state_dir / STATE_FILE
        self._node = node
        self._scale = time_scale
        self._bandwidth = bandwidth_bytes
        self._features = features
        self._max_image = max_image_bytes
        self._stop = stop or threading.Event()
        self._clock = clock
        self._lock = threading.RLock()
        self._pods: dict[str, _Pod] = {}
        self._high_water: dict[str, int] = {}
        remove_stale_tmp(state_dir)
        self._load()

    # -- persistence -------------------------------------------------------------------
    def _load(self) -> None:
        if not self._path.exists():
            return
        data = json.loads(self._path.read_text(encoding="utf-8"))
        if data.get("version") != 1:
            raise ValueError(f"{self._path}: unknown sim state version")
        for raw in data.get("pods", []):
            pod = _Pod(**raw)
            self._pods[f"{pod.namespace}/{pod.name}"] = pod

    def _save(self) -> None:
        pods = [asdict(p) for _, p in sorted(self._pods.items())]
        body = {"version": 1, "node": self._node, "pods": pods}
        atomic_write_bytes(self._path, json.dumps(body, indent=1, sort_keys=True).encode())

    # -- helpers -------------------------------------------------------------------------
    def _counter(self, key: str, pod: _Pod) -> int:
        value = pod.base_counter
        if pod.state == "running" and pod.running_since is not None:
            value += max(0, int((self._clock() - pod.running_since) * COUNTER_HZ))
        # Wall clocks can step backwards; the observable counter never does.
        value = max(value, self._high_water.get(key, 0))
        self._high_water[key] = value
        return value

    def _info(self, key: str, pod: _Pod) -> PodInfo:
        return PodInfo(
            namespace=pod.namespace,
            name=pod.name,
            uid=pod.uid,
            state=pod.state,
            memory_bytes=pod.memory_bytes,
            dirty_rate_bytes=pod.dirty_rate_bytes,
            counter=self._counter(key, pod),
            restored_by=pod.restored_by,
        )

    def _need(self, ref: PodRef) -> _Pod:
        pod = self._pods.get(ref.key)
        if pod is None:
            raise not_found("pod_not_found", f"pod {ref.key} is not on this node")
        return pod

    def _sleep(self, simulated_seconds: float) -> None:
        self._stop.wait(simulated_seconds * self._scale)

    def _link_seconds(self, nbytes: int, slowdown: float) -> float:
        return nbytes / (self._bandwidth / max(slowdown, 1e-9))

    # -- Runtime -------------------------------------------------------------------------
    def features(self) -> Features:
        return self._features

    def list_pods(self) -> list[PodInfo]:
        with self._lock:
            return [self._info(k, p) for k, p in sorted(self._pods.items())]

    def get_pod(self, ref: PodRef) -> PodInfo | None:
        with self._lock:
            pod = self._pods.get(ref.key)
            return None if pod is None else self._info(ref.key, pod)

    def put_pod(
        self, ref: PodRef, uid: str, memory_bytes: int, dirty_rate_bytes: int
    ) -> tuple[PodInfo, bool]:
        with self._lock:
            pod = self._pods.get(ref.key)
            if pod is not None:
                if pod.uid != uid:
                    raise conflict("pod_exists", f"pod {ref.key} exists with another uid")
                return self._info(ref.key, pod), False
            pod = _Pod(
                namespace=ref.namespace,
                name=ref.name,
                uid=uid,
                memory_bytes=memory_bytes,
                dirty_rate_bytes=dirty_rate_bytes,
                state="running",
                base_counter=0,
                running_since=self._clock(),
            )
            self._pods[ref.key] = pod
            self._high_water.pop(ref.key, None)
            self._save()
            return self._info(ref.key, pod), True

    def precopy(
        self, ref: PodRef, *, previous_dirty_bytes: int | None, slowdown: float
    ) -> RoundResult:
        with self._lock:
            pod = self._need(ref)
            if pod.state != "running":
                raise conflict("pod_not_running", f"pod {ref.key} is {pod.state}")
            memory, dirty_rate = pod.memory_bytes, pod.dirty_rate_bytes
        nbytes = memory if previous_dirty_bytes is None else min(previous_dirty_bytes, memory)
        seconds = self._link_seconds(nbytes, slowdown)
        dirty = min(memory, int(dirty_rate * seconds))
        self._sleep(seconds)
        return RoundResult(bytes=nbytes, dirty_bytes=dirty, seconds=seconds, frozen=False)

    def checkpoint(
        self, ref: PodRef, sink: Sink, *, previous_dirty_bytes: int | None, slowdown: float
    ) -> RoundResult:
        with self._lock:
            pod = self._need(ref)
            if pod.state == "restoring":
                raise conflict("pod_not_running", f"pod {ref.key} is being restored")
            if pod.state == "running":
                pod.base_counter = self._counter(ref.key, pod)
                pod.running_since = None
                pod.state = "frozen"
                self._save()
            state = {
                "format": IMAGE_FORMAT,
                "namespace": pod.namespace,
                "name": pod.name,
                "uid": pod.uid,
                "memory_bytes": pod.memory_bytes,
                "dirty_rate_bytes": pod.dirty_rate_bytes,
                "counter": pod.base_counter,
                "source_node": self._node,
            }
            memory = pod.memory_bytes
        nbytes = memory if previous_dirty_bytes is None else min(previous_dirty_bytes, memory)
        seconds = FREEZE_OVERHEAD_S + nbytes / DISK_BYTES_PER_S * slowdown
        self._sleep(seconds)
        sink.write(json.dumps(state, sort_keys=True).encode() + b"\n")
        padding = min(memory // PADDING_PER_BYTES, PADDING_CAP, self._max_image // 4)
        block = _PAD_PATTERN * (65536 // len(_PAD_PATTERN))
        while padding > 0:
            piece = block[:padding]
            sink.write(piece)
            padding -= len(piece)
        return RoundResult(bytes=nbytes, dirty_bytes=0, seconds=seconds, frozen=True)

    def checkpoint_lazy(self, ref: PodRef, sink: Sink, *, on_pull: Callable[[], bool]
                        ) -> RoundResult:
        """Post-copy: the same image, frozen only for the state (memory follows later;
        the simulated destination never pulls, so `on_pull` is not called)."""
        if not self._features.post_copy:
            raise conflict("post_copy_unavailable", "post-copy is off on this node")
        result = self.checkpoint(ref, sink, previous_dirty_bytes=0, slowdown=1.0)
        return RoundResult(bytes=0, dirty_bytes=0, seconds=result.seconds, frozen=True)

    def link_delay(self, nbytes: int, slowdown: float) -> float:
        seconds = self._link_seconds(nbytes, slowdown)
        self._sleep(seconds)
        return seconds

    def restore(
        self, ref: PodRef, uid: str, mid: str, image: Iterable[bytes], slowdown: float
    ) -> tuple[PodInfo, str]:
        with self._lock:
            existing = self._pods.get(ref.key)
            if existing is not None and existing.restored_by != mid:
                raise conflict("pod_exists", f"pod {ref.key} already exists on this node")
            if existing is not None and existing.state == "running":
                return self._info(ref.key, existing), existing.restored_sha256 or ""
        # Read (and so authenticate) the whole image before touching any state.
        digest = hashlib.sha256()
        first_line = b""
        for chunk in image:
            digest.update(chunk)
            if b"\n" not in first_line and len(first_line) < 65536:
                first_line += chunk[: 65536 - len(first_line)]
        state = _parse_state(first_line.split(b"\n", 1)[0], ref, uid)
        sha = digest.hexdigest()
        with self._lock:
            existing = self._pods.get(ref.key)
            if existing is not None and existing.restored_by != mid:
                raise conflict("pod_exists", f"pod {ref.key} already exists on this node")
            pod = _Pod(
                namespace=ref.namespace,
                name=ref.name,
                uid=uid,
                memory_bytes=int(state["memory_bytes"]),
                dirty_rate_bytes=int(state["dirty_rate_bytes"]),
                state="restoring",
                base_counter=int(state["counter"]),
                running_since=None,
                restored_by=mid,
                restored_sha256=sha,
                restored_counter=int(state["counter"]),
            )
            self._pods[ref.key] = pod
            self._high_water.pop(ref.key, None)
            self._save()
        self._sleep(RESTORE_OVERHEAD_S + pod.memory_bytes / DISK_BYTES_PER_S * slowdown)
        with self._lock:
            pod = self._need(ref)
            if pod.restored_by != mid:
                raise conflict("pod_exists", f"pod {ref.key} was replaced during restore")
            if pod.state == "restoring":
                pod.state = "running"
                pod.running_since = self._clock()
                self._save()
            return self._info(ref.key, pod), sha

    def verify(self, ref: PodRef, mid: str, state_sha256: str) -> VerifyResult:
        with self._lock:
            pod = self._pods.get(ref.key)
            if pod is None:
                return VerifyResult(False, 0, "pod is not on this node")
            counter = self._counter(ref.key, pod)
            if pod.restored_by != mid:
                return VerifyResult(False, counter, "pod was not restored by this migration")
            if pod.state != "running":
                return VerifyResult(False, counter, f"pod is {pod.state}")
            if pod.restored_sha256 != state_sha256:
                return VerifyResult(False, counter, "pod state does not match the image")
            if counter < pod.restored_counter:
                return VerifyResult(False, counter, "counter went backwards")
            return VerifyResult(True, counter, "")

    def resume(self, ref: PodRef) -> PodInfo | None:
        with self._lock:
            pod = self._pods.get(ref.key)
            if pod is None:
                return None
            if pod.state == "frozen":
                pod.state = "running"
                pod.running_since = self._clock()
                self._save()
            return self._info(ref.key, pod)

    def remove(self, ref: PodRef, uid: str) -> bool:
        with self._lock:
            pod = self._pods.get(ref.key)
            if pod is None:
                return False
            if pod.uid != uid:
                raise conflict("uid_mismatch", f"pod {ref.key} has another uid; not removed")
            del self._pods[ref.key]
            self._high_water.pop(ref.key, None)
            self._save()
            return True


def _invalid(message: str) -> ApiError:
    return ApiError(422, "image_invalid", message)


def _parse_state(line: bytes, ref: PodRef, uid: str) -> dict[str, Any]:
    try:
        state = json.loads(line)
    except ValueError:
        raise _invalid("image does not start with a sim state line") from None
    if not isinstance(state, dict) or state.get("format") != IMAGE_FORMAT:
        raise _invalid("not a sim image")
    if (state.get("namespace"), state.get("name"), state.get("uid")) != (
        ref.namespace,
        ref.name,
        uid,
    ):
        raise _invalid("image belongs to another pod")
    for key in ("memory_bytes", "dirty_rate_bytes", "counter"):
        if not isinstance(state.get(key), int) or state[key] < 0:
            raise _invalid(f"image state has a bad {key}")
    return state
