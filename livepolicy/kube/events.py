"""Kubernetes Events on pods, posted in the background so nothing waits for the API.

`kubectl describe pod` and every cluster dashboard show Events; a migration that moved
(or failed to move) a pod should be visible there, next to the scheduler's and the
kubelet's own. The recorder posts `events.k8s.io/v1` Events (the API the scheduler and
the kubelet use since 1.19; core/v1 Events are its older projection): `regarding` is the
pod, `reportingController` `livepolicy.io/apply`, with an `action`, a `reason` and a
`note`. A repeat of the same (pod, reason, action) updates the first Event's `series`
(count, lastObservedTime) instead of adding another, as client-go's recorder does.

Posting is best-effort by design: `record` only puts the Event on a bounded queue (a full
queue drops it and counts the drop), a background thread sends it, and an API error
(no RBAC, apiserver down) is logged once as a warning and never raised. A migration must
never be slowed or failed because its Event could not be written.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import EVENTS

log = logging.getLogger("livepolicy.kube.events")

CONTROLLER = "livepolicy.io/apply"
QUEUE_SIZE = 1000
MAX_NOTE = 1024  # the API's limit, in bytes


@dataclass(frozen=True)
class PodEvent:
    namespace: str
    pod: str
    reason: str
    action: str
    note: str
    type: str = "Normal"  # or Warning
    uid: str = ""


def micro_time(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(e: PodEvent, *, name: str, instance: str,
               controller: str = CONTROLLER) -> dict[str, Any]:
    regarding: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                                 "namespace": e.namespace, "name": e.pod}
    if e.uid:
        regarding["uid"] = e.uid
    note = e.note.encode()[:MAX_NOTE].decode(errors="ignore")
    return {"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": name, "namespace": e.namespace},
            "eventTime": micro_time(), "reportingController": controller,
            "reportingInstance": instance, "action": e.action, "reason": e.reason,
            "regarding": regarding, "note": note, "type": e.type}


class EventRecorder:
    """Posts `PodEvent`s from a background thread; `record` never blocks or raises."""

    def __init__(self, client: KubeClient, *, controller: str = CONTROLLER,
                 instance: str | None = None, queue_size: int = QUEUE_SIZE) -> None:
        self.client = client
        self.controller = controller
        self.instance = (instance or f"{socket.gethostname()}-{os.getpid()}")[:128]
        self._queue: queue.Queue[PodEvent] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._series: dict[tuple[str, str, str, str], tuple[str, int]] = {}
        self._warned = False
        self._lock = threading.Lock()
        self.posted = self.updated = self.failed = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="kube-events", daemon=True)
        self._thread.start()

    def record(self, event: PodEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, waiting at most `timeout` seconds; then give up on it."""
        self._stop.set()
        self._thread.join(timeout)
        left = self._queue.qsize()
        if left or self.dropped:
            log.warning("%d Kubernetes Event(s) not posted (API too slow or queue full)",
                        left + self.dropped)

    def _run(self) -> None:
        while True:
            try:
                event = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            try:
                self._post(event)
            except KubeError as exc:
                with self._lock:
                    self.failed += 1
                    first = not self._warned
                    self._warned = True
                if first:
                    log.warning("cannot post Kubernetes Events (the apply goes on without "
                                "them): %s", exc)
                else:
                    log.debug("event not posted: %s", exc)
            except Exception as exc:  # never let the thread die: the queue would fill up
                log.debug("event not posted: %r", exc)

    def _post(self, e: PodEvent) -> None:
        key = (e.namespace, e.pod, e.reason, e.action)
        seen = self._series.get(key)
        if seen is not None:
            name, count = seen
            try:
                self.client.patch(EVENTS, name, {
                    "series": {"count": count + 1, "lastObservedTime": micro_time()},
                    "note": event_body(e, name=name, instance=self.instance)["note"]},
                    e.namespace)
                self._series[key] = (name, count + 1)
                with self._lock:
                    self.updated += 1
                return
            except KubeError as exc:
                if not exc.not_found:  # deleted (TTL): post a new one
                    raise
        name = f"{e.pod[:200]}.{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}" \
               f"{os.urandom(2).hex()}"
        self.client.create(EVENTS, event_body(e, name=name, instance=self.instance,
                                              controller=self.controller), e.namespace)
        self._series[key] = (name, 1)
        with self._lock:
            self.posted += 1
