"""What every part of `AgentService` shares: its state, input checks, locking and faults.

`AgentService` is assembled from mixins over `ServiceCore` (`service_node`,
`service_checkpoint`, `service_transfer`, and the migration state machine in `service`):
this base declares the attributes `AgentService.__init__` sets and holds the plumbing they
all use, so one object keeps one lock per migration id and one view of a migration.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from livepolicy.agent.config import AgentConfig
from livepolicy.agent.errors import ApiError, bad_request, conflict, not_found
from livepolicy.agent.faults import FaultTable
from livepolicy.agent.images import COPY_CHUNK, ImageStore, Readable
from livepolicy.agent.keyed_locks import KeyedLocks
from livepolicy.agent.migrations import MigrationRecord, MigrationStore
from livepolicy.agent.runtimes.base import PodRef, Runtime

log = logging.getLogger("livepolicy.agent")

API_VERSION = "v1"
CRASH_EXIT_CODE = 3
MAX_BYTES = 2**50  # 1 PiB: larger sizes are typos
MAX_ROUND = 10_000
MAX_TOKEN = 4096
PULL_LOCK_TIMEOUT_S = 10.0
TRANSFERS = ("stop-and-copy", "iterative", "post-copy")

Json = dict[str, Any]


def int_field(body: Json, name: str, *, default: int | None = None, lo: int = 0) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= MAX_BYTES:
        raise bad_request(f"{name} must be an integer in {lo}..{MAX_BYTES}")
    return value


def bool_field(body: Json, name: str, default: bool | None = None) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false")
    return value


def drain_sha256(body: Readable, length: int) -> str:
    sha = hashlib.sha256()
    remaining = length
    while remaining > 0:
        block = body.read(min(COPY_CHUNK, remaining))
        if not block:
            break
        sha.update(block)
        remaining -= len(block)
    return sha.hexdigest()


def ms(seconds: float) -> int:
    return round(seconds * 1000)


class ServiceCore:
    """State and plumbing of one agent (set by `AgentService.__init__`)."""

    config: AgentConfig
    stop: threading.Event
    runtime: Runtime
    images: ImageStore
    migrations: MigrationStore
    faults: FaultTable
    _exit: Callable[[int], object]
    _keys: dict[str, bytes]  # migration keys: memory only, never on disk
    _lock: threading.Lock
    _mid_locks: KeyedLocks

    # -- plumbing ------------------------------------------------------------------------
    def _locked(self, mid: str) -> AbstractContextManager[None]:
        return self._mid_locks.hold(mid)

    def _fault(self, phase: str, mid: str | None, when: str) -> float:
        """Fire an armed fault, if any; returns the slowdown factor for this phase."""
        fault = self.faults.take(phase, mid, when)
        if fault is None:
            return 1.0
        log.warning("injected fault: %s %s at %s (%s)", fault.mode, phase, when, mid)
        if fault.mode == "crash":
            self._exit(CRASH_EXIT_CODE)
            # Only reached when a test replaced os._exit with a hook that returns.
            raise ApiError(500, "crashed", f"simulated crash at {phase} ({when})")
        if fault.mode == "fail":
            raise ApiError(500, "injected_fault", f"injected failure at {phase} ({when})")
        if fault.mode == "hang":
            if self.stop.wait(fault.seconds):
                raise ApiError(503, "shutting_down", "agent is stopping")
            return 1.0
        return fault.factor

    def _step(self, phase: str, mid: str, work: Callable[[float], Json]) -> Json:
        slowdown = self._fault(phase, mid, "before")
        with self._locked(mid):
            result = work(slowdown)
        self._fault(phase, mid, "after")
        return result

    def _record(self, mid: str, role: str | None = None) -> MigrationRecord:
        rec = self.migrations.get(mid)
        if rec is None:
            raise not_found("unknown_migration", f"migration {mid} is not known to this agent")
        if role is not None and rec.role != role:
            raise conflict("wrong_role", f"this agent is the {rec.role} of migration {mid}")
        return rec

    def _key(self, rec: MigrationRecord) -> bytes:
        key = self._keys.get(rec.mid)
        if key is None:
            raise conflict(
                "key_unavailable",
                "the migration key is not in memory (agent restarted?): call prepare again",
            )
        return key

    @staticmethod
    def _refuse_rolled_back(rec: MigrationRecord) -> None:
        # After a rollback nothing may move forward again (a new migration id is needed).
        # After commit, forward steps answer with what they recorded (replays are safe).
        if rec.phase == "rolled_back":
            raise conflict("rolled_back", f"migration {rec.mid} was rolled back")

    def _pod_state(self, rec: MigrationRecord) -> tuple[str, int | None]:
        if rec.role == "none":  # a rollback's tombstone names no pod: nothing to ask
            return "absent", None
        pod = self.runtime.get_pod(PodRef(rec.namespace, rec.name))
        if pod is None or pod.uid != rec.uid:
            return "absent", None
        return pod.state, pod.counter

    def _view(self, rec: MigrationRecord) -> Json:
        pod_state, counter = self._pod_state(rec)
        return {
            "mid": rec.mid,
            "role": rec.role,
            "phase": rec.phase,
            "pod": rec.pod,
            "uid": rec.uid,
            "pod_state": pod_state,
            "counter": counter,
            "image_bytes": self.images.size(rec.mid),
            "image_sha256": rec.image_sha256,
            "state_sha256": rec.state_sha256,
            "key_loaded": rec.mid in self._keys,
            "precopy_rounds": rec.precopy_rounds,
            "post_copy": rec.post_copy,
            "lazy_started": rec.lazy_started,
            "last_round": rec.last_round,
            "last_result": rec.last_result,
            "peer": rec.peer,
            "history": [list(h) for h in rec.history],
            "updated_at": rec.updated_at,
        }
