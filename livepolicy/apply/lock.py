"""State lock: one apply at a time per state directory.

`flock` does the locking, so a lock held by a process that died (even by SIGKILL) is
released by the kernel and the next apply proceeds. `lock.json` beside it tells who holds
the lock (ID, owner, pid, since), which the conflict message shows.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livepolicy.core.locking import LockHeld, StateLockBackend

__all__ = ["LockHeld", "LockWaitTimeout", "StateLock", "acquire_within", "force_unlock",
           "read_info"]

POLL_S = 0.25  # between two tries while waiting for a lock (flock or Lease alike)


class LockWaitTimeout(LockHeld):
    """Still held by someone else after `--lock-timeout` seconds of waiting."""

    def __init__(self, held: LockHeld, waited_s: float) -> None:
        super().__init__(held.info)
        self.held = held
        self.waited_s = waited_s

    def __str__(self) -> str:
        return f"waited {self.waited_s:g} s (--lock-timeout) and still: {self.held}"


def acquire_within(lock: StateLockBackend, timeout_s: float,
                   on_wait: Callable[[LockHeld], None] | None = None,
                   *, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    """`lock.acquire()`, tried again until `timeout_s` passed (0: once, as before), as
    Terraform's -lock-timeout. Every backend says "held" the same way (LockHeld), so the
    local flock and the Kubernetes Lease wait alike. `on_wait` hears the first refusal."""
    deadline = clock() + max(timeout_s, 0.0)
    told = False
    while True:
        try:
            lock.acquire()
            return
        except LockHeld as exc:
            left = deadline - clock()
            if left <= 0:
                if timeout_s <= 0:
                    raise
                raise LockWaitTimeout(exc, timeout_s) from None
            if not told and on_wait is not None:
                on_wait(exc)
                told = True
            sleep(min(POLL_S, left))


class StateLock:
    def __init__(self, directory: Path, operation: str = "apply") -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / "lock"
        self.info_path = directory / "lock.json"
        self.operation = operation
        self.id = str(uuid.uuid4())
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(read_info(self.info_path)) from None
        self._fd = fd
        info = {"id": self.id, "operation": self.operation, "owner": _owner(),
                "pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info), encoding="utf-8")
        os.replace(tmp, self.info_path)

    def release(self) -> None:
        if self._fd is not None:
            self.info_path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def read_info(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def force_unlock(directory: Path, lock_id: str) -> str:
    """Remove a stale lock record. A lock still held by a live process cannot be broken."""
    info_path = directory / "lock.json"
    info = read_info(info_path)
    if not info:
        return "no lock is recorded"
    if info.get("id") != lock_id:
        raise ValueError(f"lock ID {lock_id} does not match the current lock {info.get('id')}")
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ValueError(f"lock {lock_id} is held by a running process (pid "
                         f"{info.get('pid')}); stop it first") from None
    finally:
        os.close(fd)
    info_path.unlink(missing_ok=True)
    return f"lock {lock_id} removed"
