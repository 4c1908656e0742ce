"""Fault injection for the sim runtime: make a phase fail, hang, crash the agent, or crawl.

Faults are armed over the API (`POST /v1/faults`), live in memory only (a crash clears
them, as a real restart would) and fire `count` times. `when` selects whether a crash or
failure happens before the phase does anything or after it completed (but before the
answer is sent), the two cases an apply engine must recover from differently.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from livepolicy.agent.errors import bad_request
from livepolicy.agent.ids import check_mid

PHASES = (
    "prepare",
    "checkpoint",
    "transfer",
    "receive",
    "restore",
    "verify",
    "commit",
    "rollback",
    "cleanup",
)
MODES = ("fail", "hang", "crash", "slow")
WHENS = ("before", "after")
DEFAULT_HANG_SECONDS = 3600.0
DEFAULT_SLOW_FACTOR = 10.0
MAX_COUNT = 1_000_000


@dataclass
class Fault:
    phase: str
    mode: str
    count: int
    seconds: float
    factor: float
    when: str
    mid: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "mode": self.mode,
            "count": self.count,
            "seconds": self.seconds,
            "factor": self.factor,
            "when": self.when,
            "mid": self.mid,
        }


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_fault(body: dict[str, Any]) -> Fault:
    phase, mode = body.get("phase"), body.get("mode")
    if phase not in PHASES:
        raise bad_request(f"phase must be one of {', '.join(PHASES)}")
    if mode not in MODES:
        raise bad_request(f"mode must be one of {', '.join(MODES)}")
    count = body.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise bad_request(f"count must be an integer in 1..{MAX_COUNT}")
    seconds = body.get("seconds")
    if seconds is None:
        seconds = DEFAULT_HANG_SECONDS
    if not _number(seconds) or not 0 <= seconds <= 86400:
        raise bad_request("seconds must be a number in 0..86400")
    factor = body.get("factor", DEFAULT_SLOW_FACTOR)
    if not _number(factor) or not 1 <= factor <= 1e6:
        raise bad_request("factor must be a number in 1..1e6")
    when = body.get("when", "before")
    if when not in WHENS:
        raise bad_request("when must be 'before' or 'after'")
    mid = body.get("mid")
    if mid is not None:
        check_mid(mid)
    return Fault(str(phase), str(mode), count, float(seconds), float(factor), str(when), mid)


class FaultTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> int:
        with self._lock:
            n = len(self._faults)
            self._faults.clear()
            return n

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, phase: str, mid: str | None, when: str) -> Fault | None:
        """Consume one firing of the first fault armed for this phase/migration/moment."""
        with self._lock:
            for fault in self._faults:
                if fault.phase != phase or (fault.mid is not None and fault.mid != mid):
                    continue
                moment = "before" if fault.mode == "slow" else fault.when
                if moment != when:
                    continue
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
            return None
