"""The plaintext inside a `criu` checkpoint image: a manifest, then CRIU's image directories.

    b"LPCRIU/1\\n"
    manifest (one JSON line: the pod, its network, its identity, the CRIU directories)
    per entry: one JSON header line, then for files exactly `n` bytes of content:
        {"t": "d", "p": "final"}                       a directory
        {"t": "f", "p": "final/pages-1.img", "n": 4096} a file
        {"t": "l", "p": "final/parent", "to": "../pre-0"} CRIU's link to a pre-dump
    {"t": "end", "files": N, "bytes": B}

A *live* archive (`write_live`, the page stream of a dump still running) also has
        {"t": "a", "p": "dump/pages-1.img", "n": 4194304} `n` more bytes of a page file
        {"t": "fail", "why": "..."}                     the dump failed: nothing to restore
appends to one page file as CRIU writes it, the dump's other files once it ended.

The agent seals this stream with AES-GCM on the way out (`crypto.EncryptingWriter`), so
the reader only sees authenticated bytes; it still trusts no name in them: every path is
one or two plain components, files are created exclusively, owner-only, never through a
symlink, and the only symlink allowed is CRIU's `parent` pointing at a sibling directory.
Truncation is only detected at the very end, so nothing read here is acted on before
`read_archive` returns.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
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
MAX_WHY = 2000
APPEND_MAX = 16 << 20  # bytes of one piece of a growing page file


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
            total += _write_file(sink, entry, rel, view)
            files += 1
    sink.write(_header({"t": "end", "files": files, "bytes": total}))
    return total


def write_live(sink: Sink, manifest: dict[str, Any], root: Path, d: str,
               outcome: Callable[[], str | None], is_page: Callable[[str], bool], *,
               poll_s: float = 0.002) -> int:
    """Like `write_archive` for the one directory `d` that a CRIU dump is still writing:
    the page files (`is_page`) are sent as they grow, the other files once `outcome()`
    stops being None (the dump ended: "" if it succeeded, else why it failed, which the
    reader raises). Returns the number of file bytes written."""
    sink.write(MAGIC)
    sink.write(json.dumps({**manifest, "format": FORMAT, "dirs": [d], "live": True},
                          sort_keys=True).encode() + b"\n")
    _check_name(d)
    sink.write(_header({"t": "d", "p": d}))
    base = root / d
    view = memoryview(bytearray(BLOCK))
    sent: dict[str, int] = {}
    handles: dict[str, Any] = {}
    total = 0
    try:
        while True:
            done = outcome()  # read before the scan: after the end, one last full scan
            moved = False
            try:
                entries = sorted(base.iterdir(), key=lambda p: p.name)
            except FileNotFoundError:  # a failed dump's directory went: `done` tells why
                entries = []
            for entry in entries:
                name = entry.name
                if not is_page(name) or entry.is_symlink() or not entry.is_file():
                    continue
                fh = handles.get(name)
                if fh is None:
                    fh = handles[name] = entry.open("rb", buffering=0)
                    sent[name] = 0
                size = os.fstat(fh.fileno()).st_size
                while sent[name] < size:
                    n = min(size - sent[name], APPEND_MAX)
                    sink.write(_header({"t": "a", "p": f"{d}/{name}", "n": n}))
                    _copy(sink, fh, n, view)
                    sent[name] += n
                    total += n
                    moved = True
            if done is not None:
                break
            if not moved:
                time.sleep(poll_s)
    finally:
        for fh in handles.values():
            fh.close()
    if done:
        sink.write(_header({"t": "fail", "why": done[-MAX_WHY:]}))
        return total
    files = len(sent)
    for entry in sorted(base.iterdir(), key=lambda p: p.name):
        if entry.is_symlink() or not entry.is_file() or entry.name.endswith(SKIP_SUFFIXES) \
                or entry.name in sent or is_page(entry.name):
            continue
        total += _write_file(sink, entry, f"{d}/{entry.name}", view)
        files += 1
    sink.write(_header({"t": "end", "files": files, "bytes": total}))
    return total


def _copy(sink: Sink, fh: io.RawIOBase, n: int, view: memoryview) -> None:
    """`n` bytes of `fh` into `sink`: straight into its buffer if it reads files itself."""
    write_from = getattr(sink, "write_from", None)
    if write_from is not None:
        write_from(fh, n)
        return
    while n > 0:
        k = fh.readinto(view[: min(BLOCK, n)])
        if not k:
            raise OSError(f"{getattr(fh, 'name', 'a file')} shrank while it was archived")
        sink.write(cast(bytes, view[:k]))  # sinks copy what they keep: the view is reused
        n -= k


def _write_file(sink: Sink, entry: Path, rel: str, view: memoryview) -> int:
    with entry.open("rb", buffering=0) as fh:
        size = os.fstat(fh.fileno()).st_size
        sink.write(_header({"t": "f", "p": rel, "n": size}))
        _copy(sink, cast(io.RawIOBase, fh), size, view)
    return size


def _header(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True).encode() + b"\n"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise _invalid(f"bad name {name!r} in image")
    return name


class _NoHash:
    def update(self, data: bytes | memoryview, /) -> None:
        pass

    def hexdigest(self) -> str:
        return ""


class _Reader:
    """Reads over an iterator of byte chunks; hashes everything it consumes. File contents
    pass as views of the chunks, never copied (a page stream carries gigabytes)."""

    def __init__(self, chunks: Iterable[bytes], digest: bool = True) -> None:
        self._it: Iterator[bytes] = iter(chunks)
        self._cur = b""
        self._pos = 0
        self.sha = hashlib.sha256() if digest else _NoHash()
        self.count = 0

    def _next(self) -> bytes | None:
        try:
            return bytes(next(self._it))
        except StopIteration:
            return None

    def _take(self, n: int) -> bytes:
        out = self._cur[self._pos : self._pos + n]
        self._pos += n
        self.sha.update(out)
        self.count += n
        return out

    def readline(self) -> bytes:
        while True:
            idx = self._cur.find(b"\n", self._pos)
            if idx >= 0:
                return self._take(idx + 1 - self._pos)
            if len(self._cur) - self._pos > MAX_LINE:
                raise _invalid("image header line too long")
            chunk = self._next()
            if chunk is None:
                raise _invalid("image ends in the middle of a header")
            # A line across chunks (rare): join what is left of one with the next.
            self._cur, self._pos = self._cur[self._pos :] + chunk, 0

    def pieces(self, n: int) -> Iterator[memoryview]:
        """Exactly `n` bytes, in pieces: views of the chunks, valid until the next one."""
        while n > 0:
            if self._pos >= len(self._cur):
                chunk = self._next()
                if chunk is None:
                    raise _invalid("image ends in the middle of a file")
                self._cur, self._pos = chunk, 0
            take = min(n, len(self._cur) - self._pos)
            piece = memoryview(self._cur)[self._pos : self._pos + take]
            self._pos += take
            self.sha.update(piece)
            self.count += take
            n -= take
            yield piece

    def drain(self) -> None:
        """Read (and so authenticate) whatever follows the end marker."""
        rest = len(self._cur) - self._pos
        while (chunk := self._next()) is not None:
            rest += len(chunk)
        if rest:
            raise _invalid("trailing bytes after the end of the image")


def read_archive(chunks: Iterable[bytes], dest: Path, *, existing: bool = False,
                 select: Callable[[str], bool] | None = None, digest: bool = True,
                 append: Callable[[str], bool] | None = None,
                 ) -> tuple[dict[str, Any], str, int]:
    """Unpack an archive into the new, empty directory `dest` (0700), or, with `existing`,
    into the directories an earlier archive created there; `select` limits file names,
    `append` names the files a live archive may send in pieces (none without it). A
    live archive's `fail` entry raises ApiError 500 `criu_failed` (the source's dump
    failed).

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
    appended: dict[str, int] = {}  # file (a live archive's page file) -> its open fd
    try:
        total = _read_entries(reader, dest, dirs, appended, existing=existing,
                              select=select, append=append)
    finally:
        for fd in appended.values():
            os.close(fd)
    reader.drain()
    for d in manifest.get("dirs", []):
        if d not in dirs:
            raise _invalid(f"image lacks directory {d!r}")
    return manifest, reader.sha.hexdigest(), total


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _read_entries(reader: _Reader, dest: Path, dirs: set[str], appended: dict[str, int], *,
                  existing: bool, select: Callable[[str], bool] | None,
                  append: Callable[[str], bool] | None) -> int:
    """The entries up to the end marker; returns the bytes of files."""
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
            if head.get("files") != files + len(appended) or head.get("bytes") != total:
                raise _invalid("image entry count does not match its end marker")
            return total
        if kind == "fail" and append is not None:
            raise ApiError(500, "criu_failed", "the source's dump failed: "
                           f"{str(head.get('why', ''))[-MAX_WHY:]}")
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
        if kind == "a":
            size = head.get("n")
            if append is None or not append(parts[1]) or not isinstance(size, int) or \
                    isinstance(size, bool) or size <= 0:
                raise _invalid(f"bad piece of {path!r}")
            fd = appended.get(path)
            if fd is None:
                fd = appended[path] = os.open(target, _CREATE, 0o600)
            for piece in reader.pieces(size):
                _write_all(fd, piece)
            total += size
            continue
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
            fd = os.open(target, _CREATE, 0o600)
            with os.fdopen(fd, "wb") as fh:
                for piece in reader.pieces(size):
                    fh.write(piece)
            files += 1
            total += size
        else:
            raise _invalid(f"unknown entry type {kind!r}")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    with memoryview(data) as view:
        off = 0
        while off < len(view):
            off += os.write(fd, view[off:])
