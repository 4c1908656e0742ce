"""The narrow interface between the agent's HTTP API and whatever really freezes processes.

The agent server owns authentication, migration bookkeeping, encryption and the image
store; a `Runtime` only manipulates pods on this node: create/adopt, pre-copy rounds, the
final checkpoint (plaintext written into an encrypting sink, never to disk), restore from
an authenticated plaintext stream, verify, resume, remove. `sim` is the in-process twin
used by tests and the demo; `criu` and `kubelet` runtimes implement the same Protocol.

Runtimes refuse with `ApiError` (status + stable code), which the server passes through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from livepolicy.agent.crypto import Sink

PodState = Literal["running", "frozen", "restoring"]


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    state: PodState
    memory_bytes: int
    dirty_rate_bytes: int
    counter: int
    restored_by: str | None = None  # migration id that restored this pod here, if any

    @property
    def ref(self) -> PodRef:
        return PodRef(self.namespace, self.name)

    def to_json(self) -> dict[str, object]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "state": self.state,
            "memory_bytes": self.memory_bytes,
            "dirty_rate_bytes": self.dirty_rate_bytes,
            "counter": self.counter,
            "restored_by": self.restored_by,
        }


@dataclass(frozen=True, slots=True)
class Features:
    dirty_tracking: bool
    post_copy: bool
    tcp_established: bool
    fault_injection: bool


@dataclass(frozen=True, slots=True)
class RoundResult:
    """One checkpoint round: bytes moved, bytes dirtied meanwhile, how long it took (seconds,
    simulated for `sim`), and whether the pod is now frozen."""

    bytes: int
    dirty_bytes: int
    seconds: float
    frozen: bool


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    counter: int
    reason: str


class Runtime(Protocol):
    """Pod operations on one node. Every method is safe to call again after a crash."""

    name: str

    def features(self) -> Features: ...

    def list_pods(self) -> list[PodInfo]: ...

    def get_pod(self, ref: PodRef) -> PodInfo | None: ...

    def put_pod(
        self, ref: PodRef, uid: str, memory_bytes: int, dirty_rate_bytes: int
    ) -> tuple[PodInfo, bool]:
        """Create (sim) or adopt a pod; returns (pod, created). Same uid again: no-op."""
        ...

    def precopy(
        self, ref: PodRef, *, previous_dirty_bytes: int | None, slowdown: float
    ) -> RoundResult:
        """A pre-copy round while the pod keeps running (needs dirty-memory tracking).
        previous_dirty_bytes None: first round, copy everything."""
        ...

    def checkpoint(
        self, ref: PodRef, sink: Sink, *, previous_dirty_bytes: int | None, slowdown: float
    ) -> RoundResult:
        """Freeze the pod (it stays frozen) and write its plaintext image into `sink`.
        Calling it again on the frozen pod writes the same image again."""
        ...

    def link_delay(self, nbytes: int, slowdown: float) -> float:
        """Model the time to move `nbytes` to the peer (sim); real runtimes return 0."""
        ...

    def restore(
        self, ref: PodRef, uid: str, mid: str, image: Iterable[bytes], slowdown: float
    ) -> tuple[PodInfo, str]:
        """Create the pod from an authenticated image stream; returns (pod, plaintext sha256).
        Idempotent for the same migration id."""
        ...

    def verify(self, ref: PodRef, mid: str, state_sha256: str) -> VerifyResult: ...

    def resume(self, ref: PodRef) -> PodInfo | None:
        """Unfreeze a frozen pod (no-op if running); None if the pod is not here."""
        ...

    def remove(self, ref: PodRef, uid: str) -> bool:
        """Delete the pod if present (False if it was already gone)."""
        ...


@runtime_checkable
class LazyCheckpoint(Protocol):
    """Optional: runtimes that can freeze a pod for post-copy (lazy pages)."""

    def checkpoint_lazy(self, ref: PodRef, sink: Sink, *, on_pull: Callable[[], bool]
                        ) -> RoundResult:
        """Freeze the pod and write only its state into `sink`; its memory is served to
        the destination after it restores. `on_pull()` is called when the destination
        starts pulling (the source's point of no return); False refuses the pull."""
        ...
