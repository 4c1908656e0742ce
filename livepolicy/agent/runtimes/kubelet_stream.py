"""The plaintext image of one pod as the kubelet runtime writes and reads it.

One tar stream (what the agent then seals): `manifest.json` (the pod object, the source
node and architecture, and each container's archive size and sha256), then
`containers/<name>.tar`, the kubelet's checkpoint archive of each container, as is. The
sizes and digests come first so the destination can stream each archive straight into
an OCI layout (whose blob names are digests) without a temporary copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from livepolicy.agent.crypto import Sink
from livepolicy.agent.errors import ApiError, conflict
from livepolicy.agent.runtimes.base import PodRef

IMAGE_FORMAT = "livepolicy-kubelet/1"
MAX_MANIFEST = 4 << 20

#: (container, archive reader, manifest entry) -> None: imports one archive
ImportOne = Callable[[str, IO[bytes], dict[str, Any]], None]


class SinkFile(io.RawIOBase):
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sink.write(bytes(data))
        return len(data)


class StreamFile(io.RawIOBase):
    """A readable file over an iterator of authenticated chunks, hashing what it yields."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = b""
        self._pos = 0
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while n < 0 or len(out) < n:
            if self._pos >= len(self._buf):
                chunk = next(self._it, None)
                if chunk is None:
                    break
                self.sha.update(chunk)
                self._buf, self._pos = chunk, 0
            left = len(self._buf) - self._pos
            take = left if n < 0 else min(n - len(out), left)
            out += self._buf[self._pos:self._pos + take]
            self._pos += take
        return bytes(out)

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def write_pod_stream(sink: Sink, pod: dict[str, Any], names: list[str],
                     archives: dict[str, Path], *, node: str, architecture: str) -> int:
    """Write the pod's image into `sink`; returns the bytes of checkpoint data."""
    meta = pod.get("metadata") or {}
    entries: list[dict[str, Any]] = []
    for n in names:
        sha = hashlib.sha256()
        with archives[n].open("rb") as fh:
            while block := fh.read(1 << 20):
                sha.update(block)
        entries.append({"name": n, "size": archives[n].stat().st_size,
                        "sha256": sha.hexdigest()})
    manifest = {
        "format": IMAGE_FORMAT, "namespace": meta.get("namespace"),
        "name": meta.get("name"), "uid": meta.get("uid"), "source_node": node,
        "architecture": architecture, "containers": entries,
        # The address the image's sockets are bound to (kept by keepPodAddress).
        "pod_ip": (pod.get("status") or {}).get("podIP"),
        "pod": {"metadata": {k: meta[k] for k in ("name", "namespace", "uid", "labels",
                                                  "annotations", "ownerReferences")
                             if k in meta},
                "spec": pod.get("spec") or {}},
    }
    data = json.dumps(manifest, sort_keys=True).encode()
    with tarfile.open(fileobj=SinkFile(sink), mode="w|",
                      format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for entry in entries:
            info = tarfile.TarInfo(f"containers/{entry['name']}.tar")
            info.size = int(entry["size"])
            with archives[str(entry["name"])].open("rb") as fh:
                tar.addfile(info, fh)
    return sum(int(e["size"]) for e in entries)


def read_pod_stream(stream: StreamFile, ref: PodRef, uid: str, architecture: str,
                    import_one: ImportOne) -> dict[str, Any]:
    """Read the manifest, then import each container's archive as a checkpoint image."""
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            return _members(tar, ref, uid, architecture, import_one)
    except (tarfile.TarError, ValueError, KeyError, TypeError) as exc:
        raise ApiError(422, "image_invalid", f"bad kubelet runtime image: {exc}") from None


def _members(tar: tarfile.TarFile, ref: PodRef, uid: str, architecture: str,
             import_one: ImportOne) -> dict[str, Any]:
    first = tar.next()
    if first is None or first.name != "manifest.json" or first.size > MAX_MANIFEST:
        raise ApiError(422, "image_invalid", "not a kubelet runtime image")
    raw = tar.extractfile(first)
    manifest = json.loads(raw.read() if raw is not None else b"")
    if not isinstance(manifest, dict) or manifest.get("format") != IMAGE_FORMAT:
        raise ApiError(422, "image_invalid", "not a kubelet runtime image")
    if (manifest.get("namespace"), manifest.get("name"), manifest.get("uid")) != (
            ref.namespace, ref.name, uid):
        raise ApiError(422, "image_invalid", "image belongs to another pod")
    arch = str(manifest.get("architecture") or "")
    if arch and architecture and arch != architecture:
        raise conflict("architecture_mismatch", f"pod {ref.key} was checkpointed on "
                       f"{arch}; this node is {architecture}")
    entries = {str(e["name"]): e for e in manifest.get("containers") or []}
    seen: set[str] = set()
    while (member := tar.next()) is not None:
        name = member.name.removeprefix("containers/").removesuffix(".tar")
        entry = entries.get(name)
        src = tar.extractfile(member)
        if entry is None or src is None or int(entry["size"]) != member.size:
            raise ApiError(422, "image_invalid", f"unexpected member {member.name}")
        import_one(name, src, entry)
        seen.add(name)
    missing = set(entries) - seen
    if missing:
        raise ApiError(422, "image_invalid", f"image lacks containers {sorted(missing)}")
    return manifest
