"""A listening socket inside a network namespace, served by one accepting thread.

Both ways pages leave a node (the sealed page stream of stop-and-copy, and the relay in
front of CRIU's lazy page server) need the same thing: a socket bound in the node's
namespace, one thread per peer, and a close that wakes the accepting thread at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from livepolicy.agent.runtimes import netns as nets

ACCEPT_TIMEOUT_S = 1.0  # how long close() may wait for the accepting thread

log = logging.getLogger("livepolicy.agent.criu")


class Listener:
    """Accepts until closed; `handle(conn, peer)` runs in a thread of its own per peer.

    What `handle` raises among `errors` is logged and kept in `error`; the connection is
    closed either way.
    """

    errors: tuple[type[BaseException], ...] = (OSError,)
    what = "listener"  # names the peer's traffic in logs

    def __init__(self, netns: str, address: str, name: str, port: int = 0, *,
                 io_timeout: float) -> None:
        self._sock = nets.socket_in(netns)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((address, port))
        self._sock.listen(4)
        self._sock.settimeout(ACCEPT_TIMEOUT_S)
        self.address, self.port = address, int(self._sock.getsockname()[1])
        self.io_timeout = io_timeout
        self.error: str = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=name)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(self.io_timeout)
            threading.Thread(target=self._guarded, args=(conn, peer), daemon=True).start()

    def _guarded(self, conn: socket.socket, peer: object) -> None:
        with conn:
            try:
                self.handle(conn, peer)
            except self.errors as exc:
                self.error = f"{exc}"
                log.warning("%s %s: %s", self.what, peer, exc)

    def handle(self, conn: socket.socket, peer: object) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        with contextlib.suppress(OSError):
            self._sock.close()
        self._thread.join(timeout=ACCEPT_TIMEOUT_S + 1)
