"""The pods of one node, as the `criu` runtime and the node's container runtime see them.

One JSON file per pod in the node's pods directory (`<pods_dir>/<namespace>_<name>.json`,
0600, replaced atomically). Whoever starts a pod on the node (the lab, standing in for
containerd and the CNI) writes its file; the runtime adopts it (`PUT /v1/pods/...`),
updates it while it checkpoints and restores, writes the file of a pod it restored and
deletes the file of a pod it removed. So the directory is always the node's truth, and a
restarted agent finds its pods again.

A pod may answer the lab's stats protocol on `port` (`STATS\\n` -> one JSON line with at
least `count` and `token`): the runtime uses it like a readiness probe, and to verify
that a restored pod is the same process (same random token) with its state (the counter
did not go backwards).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from livepolicy.agent.fsutil import atomic_write_bytes, ensure_private_dir, remove_stale_tmp
from livepolicy.agent.runtimes import netns as nets

RECORD_VERSION = 1
_FILE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?_[a-z0-9]([-a-z0-9.]*[a-z0-9])?\.json$")

# What a pod is doing, as the runtime records it:
#   running    the process runs
#   freezing   a dump is under way (the process may or may not still run)
#   frozen     dumped: the process is gone, its images are kept until commit or rollback
#   restoring  being restored here
RecordState = str


@dataclass
class PodRecord:
    namespace: str
    name: str
    uid: str
    netns: str
    host_veth: str
    ip: str
    prefix: int
    mac: str
    pid: int = 0
    pid_start: int = 0
    port: int = 0  # stats/readiness port (0: none)
    memory_bytes: int = 0
    dirty_rate_bytes: int = 0
    state: RecordState = "running"
    work_dir: str = ""  # the runtime's plaintext CRIU images for this pod (source side)
    dump_dir: str = ""  # the images to restore from (rollback), relative to work_dir
    precopy_dirs: list[str] = field(default_factory=list)
    # how the source serves the frozen pod's pages (address, port, token, key, stream id):
    # kept beside the plaintext images it protects in transit, deleted with them
    page_stream: dict[str, Any] = field(default_factory=dict)
    # the CRIU dump under way (state freezing): a restarted agent waits for it to end
    dump_pid: int = 0
    dump_start: int = 0
    # post-copy: the lazy dump serving this pod's memory (pid, start, loopback port, the
    # relay's port and key, the namespace to delete once the pages are gone); see criu_lazy
    lazy: dict[str, Any] = field(default_factory=dict)
    restored_by: str | None = None
    restored_sha256: str = ""
    token: str = ""  # the pod process's identity as its stats report it
    counter: int = 0  # the last counter seen
    created_at: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    version: int = RECORD_VERSION

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def file_name(self) -> str:
        return f"{self.namespace}_{self.name}.json"

    def alive(self) -> bool:
        return nets.proc_alive(self.pid, self.pid_start)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PodRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class PodStore:
    """The pods directory of one node (thread-safe)."""

    def __init__(self, pods_dir: Path) -> None:
        self.dir = ensure_private_dir(pods_dir)
        remove_stale_tmp(self.dir)
        self._lock = threading.Lock()

    def _path(self, namespace: str, name: str) -> Path:
        path = self.dir / f"{namespace}_{name}.json"
        if not _FILE_RE.match(path.name) or path.parent != self.dir:
            raise ValueError(f"bad pod name {namespace}/{name}")
        return path

    def get(self, namespace: str, name: str) -> PodRecord | None:
        path = self._path(namespace, name)
        with self._lock:
            return _read(path)

    def all(self) -> list[PodRecord]:
        with self._lock:
            out = []
            for path in sorted(self.dir.glob("*.json")):
                rec = _read(path)
                if rec is not None:
                    out.append(rec)
            return out

    def save(self, rec: PodRecord) -> None:
        path = self._path(rec.namespace, rec.name)
        data = json.dumps(rec.to_json(), indent=1, sort_keys=True).encode()
        with self._lock:
            atomic_write_bytes(path, data)

    def delete(self, namespace: str, name: str) -> bool:
        path = self._path(namespace, name)
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            return True


def _read(path: Path) -> PodRecord | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("version") != RECORD_VERSION:
        return None
    try:
        return PodRecord.from_json(raw)
    except TypeError:
        return None


def read_pods(pods_dir: Path) -> list[PodRecord]:
    """The pods recorded in a node's pods directory (for readers such as the lab)."""
    if not pods_dir.is_dir():
        return []
    out = []
    for path in sorted(pods_dir.glob("*.json")):
        rec = _read(path)
        if rec is not None:
            out.append(rec)
    return out


def query_stats(netns: str, ip: str, port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    """Ask a pod for its stats from inside its namespace (over loopback, never gated)."""
    if not port:
        return None
    try:
        sock = nets.connect_in(netns, ip, port, timeout)
    except (OSError, ValueError):
        return None
    with sock:
        try:
            sock.sendall(b"STATS\n")
            data = b""
            while not data.endswith(b"\n") and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return None
    with contextlib.suppress(ValueError):
        stats = json.loads(data)
        if isinstance(stats, dict):
            return stats
    return None
