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

So pages are encrypted whenever they leave the node, cross the wire once, and are
written once on each side, instead of being re-read, re-hashed and re-stored at every
step of the generic image path.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any, BinaryIO, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from livepolicy.agent.crypto import DEFAULT_CHUNK, MAGIC, PREFIX_LEN, decrypt_stream
from livepolicy.agent.errors import ApiError
from livepolicy.agent.runtimes import criu_archive as archive
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.listener import Listener

log = logging.getLogger("livepolicy.agent.criu")

TOKEN_LINE_MAX = 256
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
    makes truncation fail. `crypto.decrypt_stream` reads it (tests check both ways).
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
        sock.sendall(header)

    def _seal(self, plain: memoryview | bytearray, last: bool) -> None:
        nonce = self._prefix + struct.pack(">IB", self._index, 1 if last else 0)
        self._sock.sendall(self._aead.encrypt(nonce, bytes(plain) if last else plain,
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

    def close(self) -> None:
        with memoryview(self._buf) as view:
            self._seal(view[: self._fill], last=True)


class PageServer(Listener):
    """Serves one pod's page files, sealed, to whoever presents the token (until closed)."""

    what = "page stream to"

    def __init__(self, *, netns: str, address: str, root: Path, dirs: list[str],
                 namespace: str, name: str, uid: str,
                 resume: dict[str, Any] | None = None) -> None:
        """A new stream, or with `resume` (an earlier `manifest()`) the same stream again,
        after an agent restart, so the image already sent still describes it."""
        self.root, self.dirs = root, dirs
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
                "key": base64.b64encode(self.key).decode(), "stream_id": self.stream_id}

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
        archive.write_archive(writer, {"stream_id": self.stream_id}, self.root,
                              self.dirs, select=is_pages)
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
        reader = cast(BinaryIO, sock.makefile("rb", buffering=1 << 20))
        try:
            manifest, _, nbytes = archive.read_archive(
                decrypt_stream(key, context, reader), dest, existing=True, select=is_pages,
                digest=False)
        except OSError as exc:
            raise ApiError(502, "peer_error", f"page stream from {address}:{port} broke: "
                           f"{exc}") from None
        finally:
            reader.close()
    if manifest.get("stream_id") != stream_id:
        raise ApiError(422, "image_invalid", "page stream of another checkpoint")
    return nbytes
