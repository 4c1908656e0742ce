"""The Plan: immutable data with one canonical JSON form.

Every view (terminal, Markdown, `show`) is rendered from `Plan.to_json()`, so they can
never disagree, and a saved plan is exactly what `apply` will execute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 2  # 2: dependency hashes over field values as arrays (planner/hashes.py)


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str
    severity: str = "block"

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "severity": self.severity}


@dataclass(frozen=True, slots=True)
class Estimate:
    memory_bytes: int
    memory_source: str  # usage | limit | request | default
    transfer: str  # iterative | stop-and-copy | post-copy
    rounds: int
    bytes_sent: int
    freeze_ms: int
    duration_ms: int
    timeout_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"memory_bytes": self.memory_bytes, "memory_source": self.memory_source,
                "transfer": self.transfer, "rounds": self.rounds, "bytes_sent": self.bytes_sent,
                "freeze_ms": self.freeze_ms, "duration_ms": self.duration_ms,
                "timeout_ms": self.timeout_ms}


@dataclass(frozen=True, slots=True)
class Migration:
    id: str
    pod: str
    uid: str
    workload: str
    source: str
    destination: str
    policy: str
    strategy: dict[str, Any]
    estimate: Estimate
    cpu_millis: int
    memory_request_bytes: int
    wave: int = 0
    depends_on: tuple[str, ...] = ()
    on_failure: str = "rollback"
    recover_on_origin: bool = False
    notes: tuple[Reason, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "pod": self.pod, "uid": self.uid, "workload": self.workload,
                "from": self.source, "to": self.destination, "policy": self.policy,
                "strategy": self.strategy, "estimate": self.estimate.to_json(),
                "requests": {"cpu_millis": self.cpu_millis,
                             "memory_bytes": self.memory_request_bytes},
                "wave": self.wave, "depends_on": list(self.depends_on),
                "on_failure": self.on_failure, "recover_on_origin": self.recover_on_origin,
                "notes": [n.to_json() for n in self.notes]}


@dataclass(frozen=True, slots=True)
class Blocked:
    pod: str
    policy: str
    source: str
    reasons: tuple[Reason, ...]

    def to_json(self) -> dict[str, Any]:
        return {"pod": self.pod, "policy": self.policy, "from": self.source,
                "reasons": [r.to_json() for r in self.reasons]}


@dataclass(frozen=True, slots=True)
class LabelChange:
    pod: str
    key: str
    value: str
    action: str  # add | remove

    def to_json(self) -> dict[str, Any]:
        return {"pod": self.pod, "key": self.key, "value": self.value, "action": self.action}


@dataclass(frozen=True)
class Plan:
    cluster: dict[str, Any]
    policies: tuple[dict[str, Any], ...]
    migrations: tuple[Migration, ...]
    blocked: tuple[Blocked, ...]
    labels: tuple[LabelChange, ...]
    graph: dict[str, Any]
    dependencies: dict[str, dict[str, str]]
    notes: tuple[Reason, ...] = ()
    stats: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return bool(self.migrations or self.labels)

    def summary(self) -> dict[str, int]:
        return {
            "migrations": len(self.migrations),
            "blocked": len(self.blocked),
            "labels_add": sum(1 for lc in self.labels if lc.action == "add"),
            "labels_remove": sum(1 for lc in self.labels if lc.action == "remove"),
            "waves": max((m.wave for m in self.migrations), default=0),
            **self.stats,
        }

    def body(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "inputs": self.inputs,
            "cluster": self.cluster,
            "summary": self.summary(),
            "policies": list(self.policies),
            "migrations": [m.to_json() for m in self.migrations],
            "blocked": [b.to_json() for b in self.blocked],
            "labels": [lc.to_json() for lc in self.labels],
            "graph": self.graph,
            "notes": [n.to_json() for n in self.notes],
            "dependencies": self.dependencies,
        }
