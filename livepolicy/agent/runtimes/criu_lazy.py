"""Post-copy (lazy pages) for the `criu` runtime: CRIU on loopback, the agents in between.

CRIU's lazy-pages protocol is plaintext and unauthenticated, so CRIU never listens or
connects beyond loopback:

- source: `criu dump --lazy-pages --address 127.0.0.1` serves the frozen pod's memory
  inside the pod's network namespace. The agent's `Relay` listens on the node address;
- destination: `criu lazy-pages --page-server --address 127.0.0.1` connects, inside the
  restored pod's (gated) namespace, to the agent's `Pull`, which dials the source relay.

Between the two agents every byte is sealed (`Channel`): both sides hold a 256-bit key
that travelled only inside the sealed checkpoint image (so only holders of the migration
key learn it); each connection derives two direction keys with HKDF from that key and
random nonces from both ends (a recorded session cannot be replayed), proves the key with
a sealed hello before any page moves, and seals every frame with AES-GCM under a counter
nonce, the frame header as associated data, the last frame flagged (a cut stream fails).

The source calls `on_pull` when an authenticated destination starts pulling: that is
the point of no return on the source side (its rollback is refused from then on).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import select
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.listener import Listener

log = logging.getLogger("livepolicy.agent.criu")

NONCE_LEN = 16
FRAME_MAX = 1 << 20
READ_CHUNK = 256 << 10
HELLO = b"livepolicy-lazy-pages/v1 hello"
IO_TIMEOUT_S = 600.0
_HEAD = struct.Struct(">IB")


class ChannelError(Exception):
    """The peer could not prove the key, or a frame failed authentication."""


def lazy_context(namespace: str, name: str, uid: str, stream_id: str) -> bytes:
    return f"livepolicy-criu-lazy/v1\x00{namespace}/{name}\x00{uid}\x00{stream_id}".encode()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ChannelError("peer closed the channel mid-frame")
        got += k
    return bytes(buf)


class Channel:
    """One authenticated, encrypted, bidirectional byte stream over a TCP socket."""

    def __init__(self, sock: socket.socket, key: bytes, context: bytes, *, server: bool) -> None:
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # page faults wait on it
        if server:
            mine = os.urandom(NONCE_LEN)
            sock.sendall(mine)
            theirs = _recv_exact(sock, NONCE_LEN)
            salt = mine + theirs
        else:
            theirs = _recv_exact(sock, NONCE_LEN)
            mine = os.urandom(NONCE_LEN)
            sock.sendall(mine)
            salt = theirs + mine
        okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=context).derive(key)
        c2s, s2c = AESGCM(okm[:32]), AESGCM(okm[32:])
        self._out, self._in = (s2c, c2s) if server else (c2s, s2c)
        self._aad = context
        self._sent = self._received = 0
        if server:  # the client proves the key first; nothing is revealed before that
            if not hmac.compare_digest(self.recv() or b"", HELLO):
                raise ChannelError("bad hello")
            self.send(HELLO)
        else:
            self.send(HELLO)
            if not hmac.compare_digest(self.recv() or b"", HELLO):
                raise ChannelError("bad hello")

    def _nonce(self, n: int) -> bytes:
        return n.to_bytes(12, "big")

    def send(self, data: bytes | memoryview, *, last: bool = False) -> None:
        head = _HEAD.pack(len(data) + 16, 1 if last else 0)
        sealed = self._out.encrypt(self._nonce(self._sent), bytes(data), head + self._aad)
        self._sent += 1
        self.sock.sendall(head + sealed)

    def recv(self) -> bytes | None:
        """The next frame's plaintext; None after the peer's last frame."""
        size, flag = _HEAD.unpack(_recv_exact(self.sock, _HEAD.size))
        if not 16 <= size <= FRAME_MAX + 16 or flag > 1:
            raise ChannelError("bad frame header")
        body = _recv_exact(self.sock, size)
        try:
            plain = self._in.decrypt(self._nonce(self._received), body,
                                     _HEAD.pack(size, flag) + self._aad)
        except InvalidTag:
            raise ChannelError("frame failed authentication") from None
        self._received += 1
        return None if flag else plain


def pump(channel: Channel, local: socket.socket) -> None:
    """Relay `local` (CRIU, plaintext, loopback) <-> `channel` until both sides end."""
    local.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    errors: list[BaseException] = []

    def up() -> None:  # local -> channel
        buf = bytearray(READ_CHUNK)
        view = memoryview(buf)
        try:
            while True:
                n = local.recv_into(view)
                if not n:
                    break
                channel.send(view[:n])
            channel.send(b"", last=True)
        except (OSError, ChannelError) as exc:
            errors.append(exc)
            with contextlib.suppress(OSError):
                channel.sock.shutdown(socket.SHUT_RDWR)

    thread = threading.Thread(target=up, daemon=True, name="lazy-relay-up")
    thread.start()
    try:
        while True:
            data = channel.recv()
            if data is None:
                break
            local.sendall(data)
        with contextlib.suppress(OSError):
            local.shutdown(socket.SHUT_WR)
    except (OSError, ChannelError) as exc:
        errors.append(exc)
        with contextlib.suppress(OSError):
            local.shutdown(socket.SHUT_RDWR)
    thread.join()
    if errors:
        raise ChannelError(str(errors[0]))


class Relay(Listener):
    """Source side: authenticated peers on the node address reach CRIU's lazy page server
    (127.0.0.1:`criu_port` inside the pod namespace). `on_pull()` is asked first; False
    refuses (the migration was rolled back)."""

    errors = (OSError, ChannelError)
    what = "lazy pages"

    def __init__(self, *, node_netns: str, address: str, pod_netns: str, criu_port: int,
                 key: bytes, context: bytes, on_pull: Callable[[], bool], port: int = 0
                 ) -> None:
        self.pod_netns, self.criu_port = pod_netns, criu_port
        self.key, self.context, self.on_pull = key, context, on_pull
        self.pulled = threading.Event()
        self._busy = threading.Lock()
        super().__init__(node_netns, address, f"lazy-relay-{pod_netns}", port,
                         io_timeout=IO_TIMEOUT_S)

    def handle(self, conn: socket.socket, peer: object) -> None:
        channel = Channel(conn, self.key, self.context, server=True)
        if not self._busy.acquire(blocking=False):
            raise ChannelError("the pages of this pod are already being pulled")
        if not self.on_pull():
            raise ChannelError("the migration was rolled back: pull refused")
        self.pulled.set()
        local = nets.connect_in(self.pod_netns, "127.0.0.1", self.criu_port, IO_TIMEOUT_S)
        with local:
            pump(channel, local)


class Pull(Listener):
    """Destination side: CRIU's lazy-pages daemon connects here (127.0.0.1 in the restored
    pod's namespace); the connection is relayed, sealed, to the source's `Relay`."""

    errors = (OSError, ChannelError)
    what = "lazy pages"

    def __init__(self, *, pod_netns: str, node_netns: str, address: str, port: int,
                 key: bytes, context: bytes) -> None:
        self.node_netns, self.source = node_netns, (address, port)
        self.key, self.context = key, context
        super().__init__(pod_netns, "127.0.0.1", f"lazy-pull-{pod_netns}",
                         io_timeout=IO_TIMEOUT_S)

    def handle(self, conn: socket.socket, peer: object) -> None:
        remote = nets.connect_in(self.node_netns, self.source[0], self.source[1], IO_TIMEOUT_S)
        with remote:
            remote.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            channel = Channel(remote, self.key, self.context, server=False)
            pump(channel, conn)


# -- CRIU processes ------------------------------------------------------------------------
PIPE_MAX_SIZE = Path("/proc/sys/fs/pipe-max-size")
PIPE_MAX_NEEDED = 4 << 20  # CRIU's lazy dump grows its page pipes to this, silently failing
STATUS_TIMEOUT_S = 120.0
SOCKET_TIMEOUT_S = 10.0


def pipe_max_ok() -> tuple[bool, int]:
    try:
        value = int(PIPE_MAX_SIZE.read_text().strip())
    except (OSError, ValueError):
        return False, 0
    return value >= PIPE_MAX_NEEDED, value


def free_loopback_port(netns: str) -> int:
    """A free TCP port on 127.0.0.1 inside `netns` (only CRIU binds there afterwards)."""
    sock = nets.socket_in(netns)
    with sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_with_status(cmd: list[str], timeout: float = STATUS_TIMEOUT_S
                      ) -> tuple[subprocess.Popen[bytes] | None, int]:
    """Start a CRIU command given `--status-fd N` (N substituted for `{fd}`); wait for its
    ready byte. Returns (process, 0) once ready, or (None, exit code) if it ended first."""
    r, w = os.pipe()
    try:
        args = [a.replace("{fd}", str(w)) for a in cmd]
        proc = subprocess.Popen(args, pass_fds=(w,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    finally:
        os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        data = os.read(r, 1) if ready else b""
    finally:
        os.close(r)
    if data:
        return proc, 0
    if proc.poll() is None:
        proc.kill()
    return None, proc.wait()


def wait_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = SOCKET_TIMEOUT_S
                ) -> bool:
    """Wait until the lazy-pages daemon made its socket (False if it died or timed out)."""
    return nets.wait_for(lambda: path.exists() or proc.poll() is not None, timeout) and \
        path.exists()


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
