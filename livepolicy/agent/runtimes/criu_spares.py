"""A warm pool of pod network namespaces on a `criu` destination.

Creating a pod's namespace, veth pair and gate takes longer than restoring a small pod, so
the runtime keeps `SPARE_POOL` of them ready: gated (inbound TCP dropped), attached to
nothing, named in `spares.json` before they exist so a crash leaves none unknown. A restore
takes one and only gives it the pod's IP and MAC; a thread refills the pool.
"""

from __future__ import annotations

import json
import logging
import os

from livepolicy.agent.fsutil import atomic_write_bytes
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.criu_node import CriuNode

log = logging.getLogger("livepolicy.agent.criu")

SPARES_FILE = "spares.json"
SPARE_POOL = 2  # pod namespaces kept ready, so a restore does not wait to create one


class CriuSpares(CriuNode):
    """The spare-namespace pool of `CriuRuntime`."""

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
