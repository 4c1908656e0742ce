"""The plaintext inside a `criu` checkpoint image: a manifest, then CRIU's image directories.

    b"LPCRIU/1\\n"
    manifest (one JSON line: the pod, its network, its identity, the CRIU directories)
    per entry: one JSON header line, then for files exactly `n` bytes of content:
        {"t": "d", "p": "final"}                       a directory
        {"t": "f", "p": "final/pages-1.img", "n": 4096} a file
        {"t": "l", "p": "final/parent", "to": "../pre-0"} CRIU's link to a pre-dump
    {"t": "end", "files": N, "bytes": B}

The agent seals this stream with AES-GCM on the way out (`crypto.EncryptingWriter`), so
the reader only sees authenticated bytes; it still trusts no name in them: every path is
one or two plain components, files are created exclusively, owner-only, never through a
symlink, and the only symlink allowed is CRIU's `parent` pointing at a sibling directory.
Truncation is only detected at the very end, so nothing read here is acted on before
`read_archive` returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from livepolicy.agent.crypto import Sink
from livepolicy.agent.errors import ApiError

MAGIC = b"LPCRIU/1\n"
FORMAT = "livepolicy-criu/1"
BLOCK = 1 << 20
MAX_LINE = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LINK = re.compile(r"^\.\./([A-Za-z0-9][A-Za-z0-9._-]{0,127})$")
SKIP_SUFFIXES = (".log",)


def _invalid(message: str) -> ApiError:
    return ApiError(422, "image_invalid", message)


def write_archive(sink: Sink, manifest: dict[str, Any], root: Path, dirs: list[str],
                  select: Callable[[str], bool] | None = None) -> int:
    """Write the manifest and the CRIU directories `dirs` (under `root`) into `sink`, only
    the files whose name `select` accepts (default: all but logs); returns the number of
    file bytes written."""
    sink.write(MAGIC)
    sink.write(json.dumps({**manifest, "format": FORMAT, "dirs": dirs},
                          sort_keys=True).encode() + b"\n")
    files = total = 0
    view = memoryview(bytearray(BLOCK))
    for d in dirs:
        _check_name(d)
        sink.write(_header({"t": "d", "p": d}))
        base = root / d
        for entry in sorted(base.iterdir(), key=lambda p: p.name):
            rel = f"{d}/{entry.name}"
            if entry.is_symlink():
                target = os.readlink(entry)
                if select is not None and not select(entry.name):
                    continue
                if entry.name == "parent" and _LINK.match(target):
                    sink.write(_header({"t": "l", "p": rel, "to": target}))
                continue
            if not entry.is_file() or entry.name.endswith(SKIP_SUFFIXES):
                continue
            if select is not None and not select(entry.name):
                continue
            with entry.open("rb", buffering=0) as fh:
                size = os.fstat(fh.fileno()).st_size
                sink.write(_header({"t": "f", "p": rel, "n": size}))
                left = size
                while left > 0:
                    n = fh.readinto(view[: min(BLOCK, left)])
                    if not n:
                        raise OSError(f"{entry} shrank while it was archived")
                    # Sinks copy what they keep, so the buffer can be reused.
                    sink.write(cast(bytes, view[:n]))
                    left -= n
            files += 1
            total += size
    sink.write(_header({"t": "end", "files": files, "bytes": total}))
    return total


def _header(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True).encode() + b"\n"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise _invalid(f"bad name {name!r} in image")
    return name


class _NoHash:
    def update(self, data: bytes, /) -> None:
        pass

    def hexdigest(self) -> str:
        return ""


class _Reader:
    """Buffered reads over an iterator of byte chunks; hashes everything it consumes."""

    def __init__(self, chunks: Iterable[bytes], digest: bool = True) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = bytearray()
        self._pos = 0
        self.sha = hashlib.sha256() if digest else _NoHash()
        self.count = 0

    def _fill(self) -> bool:
        try:
            chunk = next(self._it)
        except StopIteration:
            return False
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += chunk
        return True

    def _take(self, n: int) -> bytes:
        with memoryview(self._buf) as view:
            out = bytes(view[self._pos : self._pos + n])
        self._pos += n
        self.sha.update(out)
        self.count += n
        return out

    def readline(self) -> bytes:
        while True:
            idx = self._buf.find(b"\n", self._pos)
            if idx >= 0:
                return self._take(idx + 1 - self._pos)
            if len(self._buf) - self._pos > MAX_LINE:
                raise _invalid("image header line too long")
            if not self._fill():
                raise _invalid("image ends in the middle of a header")

    def pieces(self, n: int) -> Iterator[bytes]:
        """Exactly `n` bytes, in pieces (whole chunks pass through without a copy)."""
        while n > 0:
            if self._pos >= len(self._buf):
                try:
                    chunk = next(self._it)
                except StopIteration:
                    raise _invalid("image ends in the middle of a file") from None
                self._buf.clear()
                self._pos = 0
                if len(chunk) <= n:
                    self.sha.update(chunk)
                    self.count += len(chunk)
                    n -= len(chunk)
                    yield chunk
                    continue
                self._buf += chunk
            take = min(n, len(self._buf) - self._pos)
            yield self._take(take)
            n -= take

    def drain(self) -> None:
        """Read (and so authenticate) whatever follows the end marker."""
        while self._fill():
            pass
        rest = len(self._buf) - self._pos
        if rest:
            raise _invalid("trailing bytes after the end of the image")


def read_archive(chunks: Iterable[bytes], dest: Path, *, existing: bool = False,
                 select: Callable[[str], bool] | None = None, digest: bool = True,
                 ) -> tuple[dict[str, Any], str, int]:
    """Unpack an archive into the new, empty directory `dest` (0700), or, with `existing`,
    into the directories an earlier archive created there; `select` limits file names.

    Returns (manifest, sha256 of the whole plaintext ("" without `digest`), file bytes).
    Raises ApiError 422
    `image_invalid` for anything malformed; `crypto.ImageCorrupt` passes through.
    """
    if not existing:
        dest.mkdir(mode=0o700)
    reader = _Reader(chunks, digest)
    if reader.readline() != MAGIC:
        raise _invalid("not a criu image (bad magic)")
    try:
        manifest = json.loads(reader.readline())
    except ValueError:
        raise _invalid("bad manifest in image") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _invalid("not a livepolicy-criu/1 image")
    dirs: set[str] = set()
    files = total = 0
    while True:
        try:
            head = json.loads(reader.readline())
        except ValueError:
            raise _invalid("bad entry header in image") from None
        if not isinstance(head, dict):
            raise _invalid("bad entry header in image")
        kind = head.get("t")
        if kind == "end":
            if head.get("files") != files or head.get("bytes") != total:
                raise _invalid("image entry count does not match its end marker")
            break
        path = head.get("p")
        if not isinstance(path, str):
            raise _invalid("entry without a path")
        parts = path.split("/")
        if kind == "d":
            if len(parts) != 1:
                raise _invalid(f"bad directory {path!r}")
            name = _check_name(parts[0])
            if name in dirs:
                raise _invalid(f"directory {path!r} twice")
            if not existing:
                (dest / name).mkdir(mode=0o700)
            elif (dest / name).is_symlink() or not (dest / name).is_dir():
                raise _invalid(f"directory {path!r} is not part of this checkpoint")
            dirs.add(name)
            continue
        if len(parts) != 2 or parts[0] not in dirs:
            raise _invalid(f"bad path {path!r}")
        target = dest / parts[0] / _check_name(parts[1])
        if select is not None and not select(parts[1]):
            raise _invalid(f"unexpected file {path!r}")
        if kind == "l":
            to = head.get("to")
            m = _LINK.match(to) if isinstance(to, str) else None
            if parts[1] != "parent" or m is None or m.group(1) not in dirs:
                raise _invalid(f"bad link {path!r}")
            os.symlink(str(to), target)
        elif kind == "f":
            size = head.get("n")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _invalid(f"bad size for {path!r}")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target, flags, 0o600)
            with os.fdopen(fd, "wb") as fh:
                for piece in reader.pieces(size):
                    fh.write(piece)
            files += 1
            total += size
        else:
            raise _invalid(f"unknown entry type {kind!r}")
    reader.drain()
    for d in manifest.get("dirs", []):
        if d not in dirs:
            raise _invalid(f"image lacks directory {d!r}")
    return manifest, reader.sha.hexdigest(), total
