"""What the lab created, written down *before* it is created, so `lab down` undoes it all.

`created.jsonl` in the lab's state directory holds one JSON object per line:

    {"kind": "netns", "name": "lpl-n1"}
    {"kind": "process", "pid": 4242, "start": 123456, "what": "agent lab-1", "marker": "..."}
    {"kind": "dir", "path": "/dev/shm/livepolicy-lab-lpl"}
    {"kind": "sysctl", "path": "/proc/sys/fs/pipe-max-size", "old": 1048576, "new": 4194304}

Each line is appended and fsynced before the thing exists, so a crash at any moment leaves
a record that names at least everything that exists (and perhaps something that never
came to be, which teardown skips). Links, bridges and nftables rules all live inside the
lab's network namespaces and vanish with them; namespaces that agents create for
restored pods carry the lab's prefix and are found by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livepolicy.agent.runtimes import netns as nets

RECORD_FILE = "created.jsonl"


class Record:
    def __init__(self, root: Path) -> None:
        self.path = root / RECORD_FILE

    def add(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, **fields}, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict) and isinstance(obj.get("kind"), str):
                    out.append(obj)
        return out


def raise_sysctl(rec: Record, path: Path, minimum: int) -> bool:
    """Raise a machine-wide /proc/sys value to `minimum` if it is lower (recorded first,
    so that `lab down` puts the old value back); True if it was raised."""
    current = int(path.read_text().strip())
    if current >= minimum:
        return False
    rec.add("sysctl", path=str(path), old=current, new=minimum)
    path.write_text(str(minimum))
    return True


def _restore_sysctls(entries: list[dict[str, Any]], prefix: str) -> None:
    """Put back what `raise_sysctl` changed, unless someone changed it since or another
    lab (which may need it) is still up."""
    others = [n for n in nets.list_netns("") if n.endswith("-fabric") and
              n != f"{prefix}-fabric"]
    for e in reversed(entries):
        if e["kind"] != "sysctl" or others:
            continue
        path = Path(str(e["path"]))
        with contextlib.suppress(OSError, ValueError, KeyError):
            if path.parts[:3] == ("/", "proc", "sys") and \
                    int(path.read_text().strip()) == int(e["new"]):
                path.write_text(str(int(e["old"])))


def process_matches(pid: int, start: int, marker: str) -> bool:
    """Is `pid` still the process we started (same start time, marker on its command line)?"""
    if not nets.proc_alive(pid, start):
        return False
    if not marker:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline


def stop_process(pid: int, start: int, marker: str, grace: float = 3.0) -> bool:
    """SIGTERM, then SIGKILL, a process we started; True if it was running."""
    if not process_matches(pid, start, marker):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if nets.wait_for(lambda: not nets.proc_alive(pid, start), wait, 0.02):
            break
    nets.reap(pid)
    return True


@dataclass
class Teardown:
    processes: int = 0
    netns: int = 0
    dirs: int = 0
    leftovers: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"processes_stopped": self.processes, "netns_deleted": self.netns,
                "dirs_removed": self.dirs, "leftovers": self.leftovers or []}


def teardown(root: Path, prefix: str) -> Teardown:
    """Undo everything recorded under `root`, plus every namespace named `prefix-*`."""
    import shutil

    rec = Record(root)
    entries = rec.entries()
    out = Teardown()
    for e in entries:
        if e["kind"] == "process":
            with contextlib.suppress(TypeError, ValueError):
                if stop_process(int(e["pid"]), int(e.get("start", 0)), str(e.get("marker", ""))):
                    out.processes += 1
    names = {str(e["name"]) for e in entries if e["kind"] == "netns"}
    names |= set(nets.list_netns(f"{prefix}-"))
    # Pods first, then nodes and clients, the fabric last (any order works; this one
    # never leaves a link dangling for a moment).
    def order(name: str) -> int:
        return 2 if name.endswith("-fabric") else (0 if f"{prefix}-p" in name else 1)
    for name in sorted(names, key=lambda n: (order(n), n)):
        if nets.netns_delete(name):
            out.netns += 1
    for e in entries:
        if e["kind"] == "dir":
            path = Path(str(e["path"]))
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                out.dirs += 1
    _restore_sysctls(entries, prefix)
    left = [f"netns {n}" for n in nets.list_netns(f"{prefix}-")]
    for e in entries:
        if e["kind"] == "process":
            with contextlib.suppress(TypeError, ValueError):
                if process_matches(int(e["pid"]), int(e.get("start", 0)),
                                   str(e.get("marker", ""))):
                    left.append(f"process {e['pid']} ({e.get('what', '')})")
        if e["kind"] == "dir" and Path(str(e["path"])).exists():
            left.append(f"dir {e['path']}")
    out.leftovers = left
    return out


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while nets.proc_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not nets.proc_alive(pid)
