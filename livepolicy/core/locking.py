"""The state-lock interface shared by every backend (local directory, Kubernetes Lease)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class LockHeld(Exception):
    """Someone else holds the lock; `info` says who: id, owner, pid, host, since."""

    info: dict[str, Any]

    def __str__(self) -> str:
        i = self.info
        return (f"state is locked by another apply: ID {i.get('id', '?')}, owner "
                f"{i.get('owner', '?')} (pid {i.get('pid', '?')} on {i.get('host', '?')}), "
                f"since {i.get('since', '?')}; if that apply is gone, run "
                f"`livepolicy force-unlock {i.get('id', 'ID')}`")


class StateLockBackend(Protocol):
    id: str

    def acquire(self) -> None: ...

    def release(self) -> None: ...
