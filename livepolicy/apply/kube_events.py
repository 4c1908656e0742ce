"""The apply engine's event stream as Kubernetes Events on the pods it moves.

`apply --kube-events` tees the engine's Terraform-style events into `KubeEventSink`,
which turns the few that mark a migration phase into `PodEvent`s (`pod_events`, pure)
and hands them to the background `EventRecorder` (livepolicy.kube.events): the engine
never waits for the API and never fails because of it.

| engine event | reason | type |
|---|---|---|
| `apply_start` | MigrationStarted | Normal |
| `apply_progress` phase `transferring` (the final checkpoint is taken) | Checkpointed | Normal |
| `apply_progress` phase `verifying` (the destination restored the pod) | Restored | Normal |
| `apply_complete` | MigrationCommitted | Normal |
| `apply_errored` outcome `rolled_back` | RolledBack (+ Evicted with onFailure evict) | Warning |
| `apply_errored` outcome `failed` | MigrationFailed | Warning |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from livepolicy.apply.events import Event
from livepolicy.kube.events import EventRecorder, PodEvent


def pod_events(event: Event, uids: Mapping[str, str] | None = None) -> list[PodEvent]:
    """The Kubernetes Events one engine event stands for (usually none)."""
    m = event.get("migration")
    if not isinstance(m, dict) or "/" not in str(m.get("pod", "")):
        return []
    namespace, pod = str(m["pod"]).split("/", 1)
    src, dst, mid = m.get("from"), m.get("to"), m.get("id")
    uid = (uids or {}).get(str(mid), "")
    kind, phase, outcome = event.get("type"), event.get("phase"), event.get("outcome")
    again = " (recovered by a later run)" if event.get("recovered") else ""

    def ev(reason: str, action: str, note: str, type_: str = "Normal") -> PodEvent:
        return PodEvent(namespace, pod, reason, action, f"{note}{again}", type_, uid)

    if kind == "apply_start":
        return [ev("MigrationStarted", "Migrate", f"live migration {mid}: {src} -> {dst} "
                   f"(attempt {event.get('attempt', 0)})")]
    if kind == "apply_progress" and phase == "transferring":
        return [ev("Checkpointed", "Checkpoint", f"checkpointed on {src}: "
                   f"{event.get('bytes', 0)} bytes after {event.get('rounds', 1)} round(s); "
                   f"moving to {dst}")]
    if kind == "apply_progress" and phase == "verifying":
        return [ev("Restored", "Restore", f"restored on {dst} from {src}; verifying")]
    if kind == "apply_complete" and outcome == "migrated":
        return [ev("MigrationCommitted", "Commit", f"migrated {src} -> {dst}: frozen "
                   f"{event.get('freeze_ms', 0)} ms, {event.get('duration_ms', 0)} ms in all")]
    if kind == "apply_errored" and outcome == "rolled_back":
        out = [ev("RolledBack", "Rollback", f"rolled back to {src} (was moving to {dst}, "
                  f"reached {phase}): {event.get('error', '')}", "Warning")]
        if event.get("on_failure") == "evict":
            out.append(ev("Evicted", "Evict", f"eviction requested after the failed "
                          f"migration {src} -> {dst} (onFailure: evict)", "Warning"))
        return out
    if kind == "apply_errored" and outcome == "failed":
        return [ev("MigrationFailed", "Migrate", f"migration {src} -> {dst} failed at "
                   f"{phase}: {event.get('error', '')}; re-run apply to recover", "Warning")]
    return []


class KubeEventSink:
    """An `EventSink` that records Kubernetes Events; `close()` flushes (bounded wait)."""

    def __init__(self, recorder: EventRecorder, uids: Mapping[str, str] | None = None) -> None:
        self.recorder = recorder
        self.uids = dict(uids or {})

    def emit(self, event: Event) -> None:
        for e in pod_events(event, self.uids):
            self.recorder.record(e)

    def close(self, timeout: float = 5.0) -> None:
        self.recorder.close(timeout)


def sink_for_plan(recorder: EventRecorder, doc: Mapping[str, Any]) -> KubeEventSink:
    """A sink whose Events name each pod's uid as the plan recorded it."""
    return KubeEventSink(recorder, {str(m["id"]): str(m.get("uid") or "")
                                    for m in doc.get("migrations") or []})
