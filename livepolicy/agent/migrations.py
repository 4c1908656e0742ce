"""What an agent remembers about each migration, persisted so it survives agent crashes.

One JSON file per migration under `<state_dir>/migrations/` (0600, replaced atomically).
The migration key is deliberately absent: it lives only in the agent's memory, so after a
restart the engine re-sends it with `prepare` (idempotent) before any step that needs it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from livepolicy.agent.fsutil import atomic_write_bytes, ensure_private_dir, remove_stale_tmp
from livepolicy.agent.ids import check_mid

SOURCE_PHASES = ("prepared", "precopy", "checkpointed", "transferred", "committing", "committed")
DEST_PHASES = ("prepared", "received", "restored", "verified", "committed")
TERMINAL = ("committed", "rolled_back")


@dataclass
class MigrationRecord:
    mid: str
    role: str  # "source" | "destination"
    namespace: str
    name: str
    uid: str
    memory_bytes: int
    peer: str
    key_id: str
    phase: str = "prepared"
    last_round: int = -1
    precopy_rounds: int = 0
    pending_dirty_bytes: int | None = None
    last_result: dict[str, Any] | None = None
    final_bytes: int = 0
    image_bytes: int = 0
    image_sha256: str = ""
    state_sha256: str = ""
    transferred_to: str = ""
    post_copy: bool = False  # prepared for a lazy-pages (post-copy) move
    # post-copy's point of no return passed on this agent (the destination started its lazy
    # restore, or it pulled the source's pages): rollback is refused from then on
    lazy_started: bool = False
    # destination: SHA-256 (hex) of the token that may upload this migration's image
    # (agent/auth.py); the source never gets an operator credential of the destination
    upload_sha256: str = ""
    history: list[tuple[str, float]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def pod(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    def set_phase(self, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            self.history.append((phase, round(time.time(), 3)))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MigrationRecord:
        raw = dict(raw)
        raw["history"] = [tuple(h) for h in raw.get("history", [])]
        return cls(**raw)


class MigrationStore:
    """Thread-safe map mid -> record, written through to disk on every save()."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = ensure_private_dir(state_dir / "migrations")
        remove_stale_tmp(self.dir)
        self._lock = threading.Lock()
        self._records: dict[str, MigrationRecord] = {}
        for path in sorted(self.dir.glob("*.json")):
            rec = MigrationRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
            self._records[rec.mid] = rec

    def get(self, mid: str) -> MigrationRecord | None:
        with self._lock:
            return self._records.get(mid)

    def all(self) -> list[MigrationRecord]:
        with self._lock:
            return list(self._records.values())

    def save(self, rec: MigrationRecord) -> None:
        check_mid(rec.mid)
        rec.updated_at = time.time()
        data = json.dumps(rec.to_json(), sort_keys=True, indent=1).encode()
        with self._lock:
            atomic_write_bytes(self.dir / f"{rec.mid}.json", data)
            self._records[rec.mid] = rec
