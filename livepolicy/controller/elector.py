"""Leader election over the apply lock's Lease, so several replicas are safe.

One thread per replica: a standby tries to take the Lease every `retry` seconds (it
succeeds once the holder released it or stopped renewing for `leaseDurationSeconds`);
the leader's lock renews itself (`LeaseLock`'s thread). `leader` is `LeaseLock.holding()`:
false as soon as a renewal is overdue past the renew deadline (two thirds of the lease),
so a leader cut off from the API stops writing well before a standby may take over.
`stop(release=True)` gives the Lease back (SIGTERM), so a standby takes over within one
retry instead of waiting for the expiry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from livepolicy.kube.errors import KubeError
from livepolicy.kube.lease import LeaseHeld, LeaseLock


class Elector:
    def __init__(self, lock: LeaseLock, *, retry: float = 2.0,
                 on_change: Callable[[bool, str], None] | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.lock = lock
        self.retry = retry
        self.on_change = on_change or (lambda leader, why: None)
        self.on_error = on_error or (lambda message: None)
        self.was_leader = False
        self.holder = ""  # who holds it, as last seen by a standby
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leader(self) -> bool:
        return self.lock.holding()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, daemon=True, name="elector")
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.retry)

    def step(self) -> None:
        """One round: notice a lost lease, or try to take a free one."""
        if self.lock.holding():
            return
        if self.was_leader:
            self.was_leader = False
            self.on_change(False, "the Lease could not be renewed in time or was taken")
        try:
            self.lock.acquire()
        except LeaseHeld as exc:
            holder = str(exc.info.get("id", ""))
            if holder != self.holder:
                self.holder = holder
                self.on_change(False, f"standby: the Lease is held by {holder}")
            return
        except KubeError as exc:
            if exc.message != self.last_error:  # once per distinct problem, not per retry
                self.on_error(exc.message)
            self.last_error = exc.message
            return
        self.was_leader = True
        self.holder = self.lock.id
        self.last_error = ""
        self.on_change(True, "acquired the Lease")

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.retry + 5)
        if release:
            try:
                self.lock.release()
            except KubeError as exc:
                self.last_error = exc.message
        if self.was_leader:
            self.was_leader = False
            self.on_change(False, "released the Lease" if release else "stopped")

