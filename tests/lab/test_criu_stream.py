"""`criu_stream`: what `criu restore --stream` sees of a page file still arriving.

The peer here speaks CRIU's side of the image streamer protocol (criu/img-streamer.c:
request, reply, a pipe passed over the socket, the file read from the pipe), so the
server is checked on the bytes CRIU would get; the lab tests restore real pods with it.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

from livepolicy.agent.runtimes import criu_stream as cs


class _Criu:
    """CRIU's end: ask for a file, get `exists`, pass a pipe, read what comes."""

    def __init__(self, serve: cs.StreamServe) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(serve.path))

    def open(self, name: str) -> int | None:
        msg = b"\x0a" + bytes([len(name)]) + name.encode()
        self.sock.sendall(struct.pack("<I", len(msg)) + msg)
        (size,) = struct.unpack("<I", self.sock.recv(4))
        reply = self.sock.recv(size)
        if reply != b"\x08\x01":
            return None
        rd, wr = os.pipe()
        socket.send_fds(self.sock, [b"\0"], [wr])
        os.close(wr)
        return rd


def _read_all(fd: int, got: bytearray) -> None:
    while chunk := os.read(fd, 1 << 16):
        got.extend(chunk)
    os.close(fd)


def test_small_files_served_missing_ones_refused(tmp_path: Path) -> None:
    (tmp_path / "inventory.img").write_bytes(b"inv")
    serve = cs.StreamServe(tmp_path, {}, lambda: "")
    try:
        criu = _Criu(serve)
        assert criu.open("memfd.img") is None
        fd = criu.open("inventory.img")
        assert fd is not None
        got = bytearray()
        _read_all(fd, got)
        assert bytes(got) == b"inv"
        assert serve.served == ["inventory.img"]
        assert oct(serve.dir.stat().st_mode & 0o777) == "0o700"
    finally:
        serve.close()
    assert not serve.dir.exists()


def _grow(path: Path, data: bytes, done: threading.Event) -> None:
    with path.open("ab", buffering=0) as fh:
        for i in range(0, len(data), 100_000):
            fh.write(data[i : i + 100_000])
            time.sleep(0.001)
    done.set()


def test_page_file_follows_the_stream_last_page_only_once_verified(tmp_path: Path) -> None:
    """CRIU reads the page file while it grows, but its last page only once the stream's
    end was verified: a restore can never finish on a stream found cut afterwards."""
    data = os.urandom(2_000_000)
    page = tmp_path / "pages-1.img"
    page.write_bytes(b"")
    grown, verified = threading.Event(), threading.Event()
    serve = cs.StreamServe(tmp_path, {"pages-1.img": len(data)},
                           lambda: "" if verified.is_set() else None)
    try:
        threading.Thread(target=_grow, args=(page, data, grown)).start()
        fd = _Criu(serve).open("pages-1.img")
        assert fd is not None
        got = bytearray()
        reader = threading.Thread(target=_read_all, args=(fd, got))
        reader.start()
        assert grown.wait(30)
        deadline = time.monotonic() + 10
        while len(got) < len(data) - cs.HOLD_BACK and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert len(got) == len(data) - cs.HOLD_BACK  # all but the held-back page
        verified.set()
        reader.join(10)
        assert bytes(got) == data
    finally:
        serve.close()


def test_failed_stream_cuts_the_page_file(tmp_path: Path) -> None:
    """A stream that fails closes CRIU's pipe short: its restore fails on a short read."""
    data = os.urandom(1_000_000)
    page = tmp_path / "pages-1.img"
    page.write_bytes(data[:300_000])
    outcome: list[str | None] = [None]
    serve = cs.StreamServe(tmp_path, {"pages-1.img": len(data)}, lambda: outcome[0])
    try:
        fd = _Criu(serve).open("pages-1.img")
        assert fd is not None
        got = bytearray()
        reader = threading.Thread(target=_read_all, args=(fd, got))
        reader.start()
        time.sleep(0.1)
        outcome[0] = "page stream broke: connection reset"
        reader.join(10)
        assert not reader.is_alive()
        assert bytes(got) == data[:300_000]  # what had arrived, and not a byte more
    finally:
        serve.close()
