"""Serving a checkpoint to `criu restore --stream` while its pages still arrive.

CRIU's image streaming (criu/img-streamer.c): in `--stream` mode CRIU reads no image
file itself; it connects to `<-D dir>/streamer-serve.sock` and, for each file it
wants, sends a request (a u32 little-endian length, then the protobuf
`img_streamer_request_entry {1: filename}`), reads the reply
(`img_streamer_reply_entry {1: exists}`, same framing) and, if the file exists, passes
the write end of a pipe over the socket (SCM_RIGHTS) and reads the file from the pipe.
It asks for the page files last, and reads them in order.

So the destination can start `criu restore` as soon as CRIU's small files are here (the
live page stream's `ready` entry) and feed the page files from disk as the stream
writes them: the restore overlaps the end of the copy. What CRIU gets is authentic (every
piece of the stream was), but the stream is complete only when its end is verified:
the last page of each file is held back until then, so CRIU cannot finish a restore
from a stream that is then found cut, and a failed stream closes the pipes early, which
fails the restore.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("livepolicy.agent.criu")

SOCKET_NAME = "streamer-serve.sock"
REQUEST_MAX = 4096
PIPE_SIZE = 1 << 20  # within fs.pipe-max-size, which the lab raises to 4 MiB
HOLD_BACK = 4096  # bytes of each page file kept until the stream's end is verified
POLL_S = 0.001
ACCEPT_TIMEOUT_S = 60.0


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_request(conn: socket.socket) -> str | None:
    """The file name CRIU asks for next, or None once it hung up."""
    head = _recv_exact(conn, 4)
    if head is None:
        return None
    (size,) = struct.unpack("<I", head)
    if not 2 <= size <= REQUEST_MAX:
        raise OSError(f"bad image streamer request ({size} bytes)")
    msg = _recv_exact(conn, size)
    if msg is None or msg[0] != 0x0A:  # field 1, length-delimited
        raise OSError("bad image streamer request")
    length, shift, i = 0, 0, 1
    while i < len(msg) and shift < 32:
        byte = msg[i]
        i += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    try:
        name = msg[i : i + length].decode()
    except UnicodeDecodeError:
        raise OSError("bad image name in a streamer request") from None
    if len(name) != length or not name or "/" in name or name in (".", ".."):
        raise OSError(f"bad image name {name!r} in a streamer request")
    return name


def reply(exists: bool) -> bytes:
    return struct.pack("<I", 2) + bytes([0x08, 1 if exists else 0])


class StreamServe:
    """Answers one `criu restore --stream` from `images` (a directory the page stream
    fills); `pending` names the page files still arriving and their final sizes;
    `outcome()` is None while the stream runs, "" once it ended verified, else why not."""

    def __init__(self, images: Path, pending: dict[str, int],
                 outcome: Callable[[], str | None]) -> None:
        self.images, self.pending, self.outcome = images, pending, outcome
        self.error = ""
        self.served: list[str] = []
        self._stop = threading.Event()
        self._conn: socket.socket | None = None
        self._writers: list[threading.Thread] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # CRIU looks for the socket in its images directory (`-D`), whose path must fit a
        # socket address (108 bytes): a short private directory of its own (0700: only
        # we, root, connect); the images themselves stay where they are.
        self.dir = Path(tempfile.mkdtemp(prefix="lpcriu-"))
        self.path = self.dir / SOCKET_NAME
        self._sock.bind(str(self.path))
        self._sock.listen(1)
        self._sock.settimeout(ACCEPT_TIMEOUT_S)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="criu-serve")
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError as exc:
            if not self._stop.is_set():
                self.error = f"criu never connected: {exc}"
            return
        self._conn = conn
        with conn:
            try:
                while (name := read_request(conn)) is not None:
                    path = self.images / name
                    exists = name in self.pending or (path.is_file() and not path.is_symlink())
                    conn.sendall(reply(exists))
                    if not exists:
                        continue
                    _, fds, _, _ = socket.recv_fds(conn, 1, 1)
                    if len(fds) != 1:
                        raise OSError(f"criu sent no pipe for {name}")
                    self.served.append(name)
                    writer = threading.Thread(target=self._feed, args=(name, fds[0]),
                                              daemon=True, name=f"criu-serve-{name}")
                    writer.start()
                    self._writers.append(writer)
            except OSError as exc:
                self.error = f"image streamer: {exc}"

    def _feed(self, name: str, fd: int) -> None:
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            final = self.pending.get(name)
            if final is None:
                self._copy(self.images / name, fd, None)
            else:
                self._copy(self.images / name, fd, final)
        except BrokenPipeError:
            pass  # CRIU stopped reading: its restore fails and says why
        except OSError as exc:
            self.error = self.error or f"image streamer, {name}: {exc}"
        finally:
            os.close(fd)

    def _copy(self, path: Path, fd: int, final: int | None) -> None:
        """Splice `path` into the pipe; a page file (`final` bytes in the end) as the stream
        writes it, its last page only once the stream is verified."""
        while final is not None and not path.exists():
            if self.outcome() is not None or self._stop.is_set():
                return
            time.sleep(POLL_S)
        with path.open("rb", buffering=0) as fh:
            src = fh.fileno()
            sent = 0
            size = os.fstat(src).st_size if final is None else final
            while sent < size:
                outcome = "" if final is None else self.outcome()
                if outcome:  # the stream failed: cut the file, so CRIU fails
                    return
                have = os.fstat(src).st_size
                limit = have if outcome == "" else min(have, size - HOLD_BACK)
                if sent >= limit:
                    if self._stop.is_set():
                        return
                    time.sleep(POLL_S)
                    continue
                sent += os.splice(src, fd, limit - sent, offset_src=sent)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        if self._conn is not None:  # CRIU still connected (it failed): wake the reader
            with contextlib.suppress(OSError):
                self._conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        for writer in self._writers:
            writer.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)
