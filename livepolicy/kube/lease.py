"""The apply lock kept in a Kubernetes `Lease` (coordination.k8s.io/v1), for applies run
from several machines (CI runners, laptops) against one cluster.

Same interface as the local `StateLock` (livepolicy/apply/lock.py): `acquire()` raises
`LeaseHeld` (with `info` = id, operation, owner, pid, host, since) when someone else holds
it, `release()` gives it back, and it works as a context manager.

How it holds: `spec.holderIdentity` is this lock's ID, `renewTime` is refreshed by a
background thread every `duration / 3` seconds; a holder that stops renewing (killed,
network gone) loses the lock `leaseDurationSeconds` after its last renewal, and the next
`acquire` takes it over. Every write carries the Lease's resourceVersion, so two
processes racing for a free or expired lease cannot both win: the loser gets 409 Conflict
and reports who won. If a holder finds on renewal that someone else took the lease, it
sets `lost` (an Event) and stops renewing. Expiry compares the holder's `renewTime` with
this machine's clock; clocks must agree to well within the lease duration.

Leader election (the controller) uses the same lock with a stable `identity` and a
`renew_deadline` shorter than the duration: `holding()` is true only while the last
successful renewal is younger than that deadline, so a leader cut off from the API stops
writing before anyone else can take the lease over; after `lost`, `acquire()` starts
afresh.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from livepolicy.core.locking import LockHeld
from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import LEASES

INFO_ANNOTATION = "livepolicy.io/lock"
DEFAULT_NAME = "livepolicy-apply"
DEFAULT_NAMESPACE = "kube-system"
_ATTEMPTS = 3


class LeaseHeld(LockHeld):
    """The Lease is held by someone else; `info` also says when it expires."""

    def __str__(self) -> str:
        i = self.info
        return (f"the apply lock (Lease {i.get('lease', '?')}) is held by another apply: ID "
                f"{i.get('id', '?')}, owner {i.get('owner', '?')} (pid {i.get('pid', '?')} on "
                f"{i.get('host', '?')}), since {i.get('since', '?')}; it expires at "
                f"{i.get('expires', '?')} unless renewed. If that apply is gone, wait for "
                f"the expiry or force-unlock ID {i.get('id', '?')}")


def micro_time(t: float) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


def _owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def lease_info(lease: dict[str, Any]) -> dict[str, Any]:
    """Who holds a Lease: the lock record in its annotation plus the Lease's own times."""
    meta = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    try:
        info = json.loads((meta.get("annotations") or {}).get(INFO_ANNOTATION, "{}"))
    except json.JSONDecodeError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    info.setdefault("id", spec.get("holderIdentity", ""))
    info["lease"] = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    renewed = parse_time(str(spec.get("renewTime") or spec.get("acquireTime") or ""))
    if renewed is not None:
        info["renewed"] = micro_time(renewed)
        info["expires"] = micro_time(renewed + float(spec.get("leaseDurationSeconds") or 0))
    return info


def is_free(lease: dict[str, Any], now: float) -> bool:
    """Nobody holds it: released (no holder) or expired (not renewed in time)."""
    spec = lease.get("spec") or {}
    if not spec.get("holderIdentity"):
        return True
    renewed = parse_time(str(spec.get("renewTime") or spec.get("acquireTime") or ""))
    if renewed is None:
        return True
    return renewed + float(spec.get("leaseDurationSeconds") or 0) < now


class LeaseLock:
    def __init__(self, client: KubeClient, name: str = DEFAULT_NAME,
                 namespace: str = DEFAULT_NAMESPACE, *, operation: str = "apply",
                 duration: float = 30.0, renew_every: float | None = None,
                 renew: bool = True, identity: str = "",
                 renew_deadline: float | None = None) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.operation = operation
        self.duration = max(1, round(duration))
        self.renew_every = renew_every if renew_every is not None else self.duration / 3
        self.renew = renew
        self.renew_deadline = renew_deadline if renew_deadline is not None else self.duration
        self.id = identity or str(uuid.uuid4())
        self.last_renewed = 0.0  # time.monotonic() of the last successful write
        self.lost = threading.Event()
        self.renewals = 0
        self._version = ""
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- acquire ---------------------------------------------------------------------------
    def _record(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "operation": self.operation, "owner": _owner(),
                "pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}

    def _body(self, now: float, previous: dict[str, Any] | None) -> dict[str, Any]:
        spec_prev = (previous or {}).get("spec") or {}
        transitions = int(spec_prev.get("leaseTransitions") or 0)
        if spec_prev.get("holderIdentity") and spec_prev.get("holderIdentity") != self.id:
            transitions += 1
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "annotations": {INFO_ANNOTATION: json.dumps(self._record(now))}}
        if previous is not None:
            meta["resourceVersion"] = (previous.get("metadata") or {}).get("resourceVersion")
            meta["labels"] = (previous.get("metadata") or {}).get("labels") or {}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.id, "leaseDurationSeconds": self.duration,
                         "acquireTime": micro_time(now), "renewTime": micro_time(now),
                         "leaseTransitions": transitions}}

    def holding(self) -> bool:
        """Ours, and renewed within `renew_deadline`: safe to act as the holder."""
        return self._held and not self.lost.is_set() and \
            time.monotonic() - self.last_renewed < self.renew_deadline

    def acquire(self) -> None:
        if self._held and (self.holding() or not self.renew):  # a lock that never renews
            return                                             # keeps the apply semantics
        if self._held:  # lost or overdue: forget the old term before trying again
            self._stop.set()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(timeout=self.renew_every + 30)
            self._thread = None
            self._held = False
        for _ in range(_ATTEMPTS):
            now = time.time()
            current = self.client.get_optional(LEASES, self.name, self.namespace)
            if current is not None and not is_free(current, now) and \
                    (current.get("spec") or {}).get("holderIdentity") != self.id:
                raise LeaseHeld(lease_info(current))
            try:
                if current is None:
                    out = self.client.create(LEASES, self._body(now, None), self.namespace)
                else:
                    out = self.client.replace(LEASES, self._body(now, current), self.namespace)
            except KubeError as exc:
                if exc.status == 409:  # someone else wrote it first: look again
                    continue
                raise
            self._version = str((out.get("metadata") or {}).get("resourceVersion", ""))
            self.last_renewed = time.monotonic()
            self._held = True
            self.lost.clear()
            self._start_renewal()
            return
        current = self.client.get_optional(LEASES, self.name, self.namespace)
        raise LeaseHeld(lease_info(current or {}))

    # -- renew -----------------------------------------------------------------------------
    def _start_renewal(self) -> None:
        if not self.renew:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                        name=f"lease-{self.name}")
        self._thread.start()

    def renew_now(self) -> bool:
        """Refresh renewTime once; False when the lease is no longer ours."""
        with self._lock:
            if not self._held:
                return False
            started = time.monotonic()
            current = self.client.get_optional(LEASES, self.name, self.namespace)
            if current is None or (current.get("spec") or {}).get("holderIdentity") != self.id:
                self.lost.set()
                return False
            current["spec"]["renewTime"] = micro_time(time.time())
            try:
                out = self.client.replace(LEASES, current, self.namespace)
            except KubeError as exc:
                if exc.status == 409:  # changed under us: the next round looks again
                    return True
                raise
            self._version = str((out.get("metadata") or {}).get("resourceVersion", ""))
            self.last_renewed = started  # the renewal counts from before it was sent
            self.renewals += 1
            return True

    def _renew_loop(self) -> None:
        wait = self.renew_every
        while not self._stop.wait(wait):
            try:
                if not self.renew_now():
                    return
                wait = self.renew_every
            except KubeError:
                if time.monotonic() - self.last_renewed >= self.renew_deadline:
                    self.lost.set()  # it may expire any moment: stop acting as the holder
                    return
                wait = min(self.renew_every, 1.0)  # retry soon, well before the deadline

    # -- release ---------------------------------------------------------------------------
    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.renew_every + 30)
            self._thread = None
        with self._lock:
            if not self._held:
                return
            self._held = False
            try:
                current = self.client.get_optional(LEASES, self.name, self.namespace)
                if current is None or (current.get("spec") or {}).get("holderIdentity") \
                        != self.id:
                    return  # expired and taken over: nothing of ours to give back
                _clear(current)
                self.client.replace(LEASES, current, self.namespace)
            except KubeError as exc:
                if exc.status not in (404, 409):
                    raise

    def __enter__(self) -> LeaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _clear(lease: dict[str, Any]) -> None:
    spec = lease.setdefault("spec", {})
    spec.pop("holderIdentity", None)
    spec.pop("acquireTime", None)
    spec.pop("renewTime", None)
    spec["leaseDurationSeconds"] = 1
    (lease.get("metadata") or {}).get("annotations", {}).pop(INFO_ANNOTATION, None)


def force_unlock(client: KubeClient, lock_id: str, name: str = DEFAULT_NAME,
                 namespace: str = DEFAULT_NAMESPACE) -> str:
    """Free a lease whose holder is gone, if it is still the one with `lock_id`."""
    current = client.get_optional(LEASES, name, namespace)
    if current is None or not (current.get("spec") or {}).get("holderIdentity"):
        return "no lock is recorded"
    held = (current.get("spec") or {}).get("holderIdentity")
    if held != lock_id:
        raise ValueError(f"lock ID {lock_id} does not match the current lock {held}")
    _clear(current)
    client.replace(LEASES, current, namespace)  # carries the resourceVersion: 409 if renewed
    return f"lock {lock_id} removed"
