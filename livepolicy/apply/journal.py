"""Append-only, fsynced journal of every migration phase change.

A phase is written *before* it takes effect, so after a crash at any instant the journal
says the furthest step that may have happened; the agents say what really did. The
`committing` record is the single commit point: before it, recovery rolls back; after it,
recovery rolls forward. For post-copy (`committing` with `post_copy: true`) it is written
before the destination's lazy restore starts, so rolling forward there means finishing
that restore, verifying, then committing.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ordered phases of one attempt; `committing` is the commit point.
PHASES = ("pending", "preparing", "checkpointing", "transferring", "restoring", "verifying",
          "committing", "committed")
FINAL = ("committed", "rolled_back", "failed", "skipped")
COMMIT_POINT = "committing"


def _parse(text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in text.splitlines(keepends=True):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a crash mid-write: ignore it and later ones
    return out


def _complete(text: str) -> str:
    """The whole lines of `text` (a torn last line dropped)."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in _parse(text))


def past_commit_point(phase: str) -> bool:
    return phase in ("committing", "committed")


@dataclass
class MigrationRecord:
    """What the journal says about one planned migration."""

    mid: str
    phase: str = "pending"
    attempt: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def final(self) -> bool:
        return self.phase in FINAL


class Journal:
    """JSON-lines file; each append is flushed and fsynced before it returns.

    `mirror`, when given, is called after each append with the whole journal text, and
    the append returns only once it did (apply/kube_journal.py: a copy in the cluster
    that another machine resumes from); `seed` is a longer journal found there, written
    to the file first when the file has fewer lines."""

    def __init__(self, path: Path, *, mirror: Callable[[str], None] | None = None,
                 seed: str = "") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.Lock()
        self.mirror = mirror
        self.seeded = False
        if seed and len(_parse(seed)) > len(self._lines()):
            tmp = path.with_suffix(".seed")
            with tmp.open("w", encoding="utf-8") as f:
                f.write(_complete(seed))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self.seeded = True
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._seq = sum(1 for _ in self._lines())
        self._text = _complete(path.read_text(encoding="utf-8")) if mirror else ""

    def _lines(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.path.exists():
            return out
        if not self.path.exists():
            return []
        return _parse(self.path.read_text(encoding="utf-8"))

    def append(self, kind: str, **data: Any) -> None:
        with self._lock:
            self._seq += 1
            rec = {"seq": self._seq, "time": round(time.time(), 3), "kind": kind, **data}
            line = json.dumps(rec, sort_keys=True) + "\n"
            os.write(self._fd, line.encode())
            os.fsync(self._fd)
            if self.mirror is not None:
                self._text += line
                self.mirror(self._text)

    def phase(self, mid: str, phase: str, attempt: int, **detail: Any) -> None:
        self.append("phase", mid=mid, phase=phase, attempt=attempt, **detail)

    def records(self) -> dict[str, MigrationRecord]:
        out: dict[str, MigrationRecord] = {}
        for rec in self._lines():
            if rec.get("kind") != "phase":
                continue
            r = out.setdefault(rec["mid"], MigrationRecord(rec["mid"]))
            r.phase = rec["phase"]
            r.attempt = rec.get("attempt", 0)
            r.error = rec.get("error", "")
            r.detail = {k: v for k, v in rec.items()
                        if k not in ("seq", "time", "kind", "mid", "phase", "attempt")}
        return out

    def events(self) -> list[dict[str, Any]]:
        return self._lines()

    def close(self) -> None:
        os.close(self._fd)
