"""Memory pages of a checkpoint, pulled by the destination node over the node network.

The sealed image that travels through the agents' API (`PUT /image`, stored encrypted on
both sides, hashed at every step) is kept small: CRIU's process-state images and a
manifest. The page files, the bulk of a checkpoint, go straight from the source node to
the destination node across the subnet:

- after the dump, the source serves them on its node address (a socket in the node's
  network namespace), as one archive sealed in the agent's AES-GCM STREAM image format
  (`crypto.py`) under a fresh random key;
- that key, a one-time token and the address travel only inside the sealed image, which
  only the holder of the migration key can open; a peer must send the token first;
- the destination's runtime, on restore, connects from its node's namespace, sends the
  token, and authenticates and unpacks the stream (`crypto.decrypt_stream`, so any bit
  flipped, chunk dropped or stream cut fails as `image_corrupt`).

A *live* stream (`outcome` given) serves a dump still running: the source returns the
sealed image as soon as the dump started, the page files cross the network while CRIU
writes them, and CRIU's other files follow once it ended (`criu_archive.write_live`), so
dump and copy overlap instead of following each other. The sealed image then holds only
the manifest; everything CRIU wrote travels in the stream, as authenticated as before.

So pages are encrypted whenever they leave the node, cross the wire once, and are
written once on each side, instead of being re-read, re-hashed and re-stored at every
step of the generic image path.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import io
import logging
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from livepolicy.agent.crypto import (
    DEFAULT_CHUNK,
    HEADER_LEN,
    MAGIC,
    MAX_CHUNK,
    PREFIX_LEN,
    TAG_LEN,
    decrypt_stream,
)
from livepolicy.agent.errors import ApiError
from livepolicy.agent.runtimes import criu_archive as archive
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.listener import Listener

log = logging.getLogger("livepolicy.agent.criu")

TOKEN_LINE_MAX = 256
SEND_QUEUE = 8  # sealed chunks waiting for the network
IO_TIMEOUT_S = 120.0


def is_pages(name: str) -> bool:
    return name.startswith("pages-") and name.endswith(".img")


def stream_context(namespace: str, name: str, uid: str, stream_id: str) -> bytes:
    return f"livepolicy-criu-pages/v1\x00{namespace}/{name}\x00{uid}\x00{stream_id}".encode()


class StreamSealer:
    """Writes the agent's image format (see crypto.py: header MAGIC || nonce prefix ||
    chunk size, then chunks sealed with AES-GCM under nonce prefix || index || last-flag,
    associated data header || context) straight into a socket.

    Unlike `crypto.EncryptingWriter` it copies each byte once and hashes nothing: a page
    stream needs no digest, AES-GCM authenticates every chunk, and the last-chunk flag
    makes truncation fail. `crypto.decrypt_stream` reads it (tests check both ways). A
    thread of its own sends the sealed chunks, so the network (which runs without the
    interpreter's lock) overlaps the sealing of the next ones.
    """

    def __init__(self, key: bytes, context: bytes, sock: socket.socket,
                 chunk_size: int = DEFAULT_CHUNK) -> None:
        self._aead = AESGCM(key)
        self._prefix = os.urandom(PREFIX_LEN)
        header = MAGIC + self._prefix + struct.pack(">I", chunk_size)
        self._aad = header + context
        self._sock = sock
        self._chunk = chunk_size
        self._buf = bytearray(chunk_size)
        self._fill = 0
        self._index = 0
        self.bytes = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(SEND_QUEUE)
        self._error: OSError | None = None
        sock.sendall(header)
        self._sender = threading.Thread(target=self._send, daemon=True, name="page-sender")
        self._sender.start()

    def _send(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._sock.sendall(data)
                except OSError as exc:
                    self._error = exc  # raised to the writer; the queue is still drained

    def _seal(self, plain: memoryview | bytearray, last: bool) -> None:
        if self._error is not None:
            raise self._error
        nonce = self._prefix + struct.pack(">IB", self._index, 1 if last else 0)
        self._queue.put(self._aead.encrypt(nonce, bytes(plain) if last else plain,
                                           self._aad))
        self._index += 1

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        off, size = 0, len(view)
        while off < size:
            if self._fill == self._chunk:  # more data follows: this chunk is not the last
                self._seal(self._buf, last=False)
                self._fill = 0
            n = min(self._chunk - self._fill, size - off)
            self._buf[self._fill : self._fill + n] = view[off : off + n]
            self._fill += n
            off += n
        self.bytes += size
        return size

    def write_from(self, fh: io.RawIOBase, n: int) -> None:
        """Like `write(fh.read(n))`, read straight into the chunk being filled."""
        with memoryview(self._buf) as view:
            while n > 0:
                if self._fill == self._chunk:
                    self._seal(view, last=False)
                    self._fill = 0
                k = fh.readinto(view[self._fill : self._fill + min(n, self._chunk - self._fill)])
                if not k:
                    raise OSError("a file shrank while it was streamed")
                self._fill += k
                self.bytes += k
                n -= k

    def abort(self) -> None:
        """Stop without a last chunk (the peer sees a cut stream); ends the sending thread."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a send blocked on the peer
        self._error = self._error or OSError("page stream aborted")
        self._queue.put(None)
        self._sender.join()

    def close(self) -> None:
        """Seal the last chunk and wait until everything was sent (raises what sending
        raised)."""
        try:
            with memoryview(self._buf) as view:
                self._seal(view[: self._fill], last=True)
        finally:
            self._queue.put(None)
            self._sender.join()
        if self._error is not None:
            raise self._error


class PageServer(Listener):
    """Serves one pod's page files, sealed, to whoever presents the token (until closed)."""

    what = "page stream to"

    def __init__(self, *, netns: str, address: str, root: Path, dirs: list[str],
                 namespace: str, name: str, uid: str,
                 resume: dict[str, Any] | None = None,
                 outcome: Callable[[], str | None] | None = None) -> None:
        """A new stream, or with `resume` (an earlier `manifest()`) the same stream again,
        after an agent restart, so the image already sent still describes it. With
        `outcome` a live stream of the one directory in `dirs` (see the module doc)."""
        self.root, self.dirs, self.outcome = root, dirs, outcome
        if resume is not None:
            self.key = base64.b64decode(str(resume["key"]))
            self.token, self.stream_id = str(resume["token"]), str(resume["stream_id"])
        else:
            self.key = os.urandom(32)
            self.token = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
            self.stream_id = os.urandom(16).hex()
        self.context = stream_context(namespace, name, uid, self.stream_id)
        self.served = 0
        super().__init__(netns, address, f"criu-pages-{namespace}-{name}",
                         int(resume["port"]) if resume is not None else 0,
                         io_timeout=IO_TIMEOUT_S)

    def manifest(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port, "token": self.token,
                "key": base64.b64encode(self.key).decode(), "stream_id": self.stream_id,
                "live": self.outcome is not None}

    def handle(self, conn: socket.socket, peer: object) -> None:
        line = b""
        while not line.endswith(b"\n") and len(line) < TOKEN_LINE_MAX:
            chunk = conn.recv(TOKEN_LINE_MAX - len(line))
            if not chunk:
                return
            line += chunk
        if not hmac.compare_digest(line.strip(), self.token.encode()):
            log.warning("page stream: wrong token from %s", peer)
            return
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        writer = StreamSealer(self.key, self.context, conn)
        try:
            if self.outcome is not None:
                archive.write_live(writer, {"stream_id": self.stream_id}, self.root,
                                   self.dirs[-1], self.outcome, is_pages)
            else:
                archive.write_archive(writer, {"stream_id": self.stream_id}, self.root,
                                      self.dirs, select=is_pages)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        self.served += 1


def fetch_pages(info: dict[str, Any], *, netns: str, dest: Path, namespace: str, name: str,
                uid: str) -> int:
    """Pull the page files described by a manifest's `pages` entry into `dest` (whose
    directories the sealed image created); returns the bytes of pages received."""
    try:
        address, port = str(info["address"]), int(info["port"])
        token, stream_id = str(info["token"]), str(info["stream_id"])
        key = base64.b64decode(str(info["key"]), validate=True)
    except (KeyError, ValueError, TypeError):
        raise ApiError(422, "image_invalid", "bad page stream description in image") from None
    context = stream_context(namespace, name, uid, stream_id)
    try:
        sock = nets.connect_in(netns, address, port, IO_TIMEOUT_S)
    except OSError as exc:
        raise ApiError(502, "peer_unreachable", f"cannot reach the source's page stream at "
                       f"{address}:{port}: {exc}") from None
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.sendall(token.encode() + b"\n")
        reader = cast(BinaryIO, _Prefetch(sock))
        try:
            live = info.get("live") is True  # every file CRIU wrote, pages as they grew
            manifest, _, nbytes = archive.read_archive(
                decrypt_stream(key, context, reader), dest, existing=True,
                select=None if live else is_pages, digest=False,
                append=is_pages if live else None)
        except OSError as exc:
            raise ApiError(502, "peer_error", f"page stream from {address}:{port} broke: "
                           f"{exc}") from None
        finally:
            reader.close()
    if manifest.get("stream_id") != stream_id:
        raise ApiError(422, "image_invalid", "page stream of another checkpoint")
    return nbytes


class _Prefetch:
    """The sealed stream as `decrypt_stream` reads it (`read(n)`), received by a thread of
    its own: one sealed chunk per block, so the network overlaps the decryption and
    writing of the previous chunks, and a chunk is handed over without a copy."""

    def __init__(self, sock: socket.socket, depth: int = SEND_QUEUE) -> None:
        self._sock = sock
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._cur = b""
        self._pos = 0
        self._eof = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="page-receiver")
        self._thread.start()

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        with memoryview(buf) as view:
            got = 0
            while got < n and not self._stop.is_set():
                k = self._sock.recv_into(view[got:])
                if not k:
                    break
                got += k
        return bytes(buf) if got == n else bytes(buf[:got])

    def _run(self) -> None:
        try:
            header = self._recv(HEADER_LEN)
            self._queue.put(header)
            size = struct.unpack(">I", header[-4:])[0] if len(header) == HEADER_LEN else 0
            if not 0 < size <= MAX_CHUNK:
                self._queue.put(b"")
                return
            while not self._stop.is_set():
                block = self._recv(size + TAG_LEN)
                self._queue.put(block)
                if len(block) < size + TAG_LEN:
                    self._queue.put(b"")
                    return
        except BaseException as exc:  # handed to the reader, which raises it
            self._queue.put(exc)

    def read(self, n: int) -> bytes:
        out = b""
        while len(out) < n and not self._eof:
            if self._pos >= len(self._cur):
                item = self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                if not item:
                    self._eof = True
                    break
                self._cur, self._pos = item, 0
            take = min(n - len(out), len(self._cur) - self._pos)
            if not out and self._pos == 0 and take == len(self._cur):
                out = self._cur  # a whole block: no copy
            else:
                out += self._cur[self._pos : self._pos + take]
            self._pos += take
        return out

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        while self._thread.is_alive():  # a full queue must not hold the thread
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()
