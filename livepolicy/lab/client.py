"""A streaming client that checks every reply of a lab pod, over one TCP connection.

It runs in a lab client namespace (a host on the pod's subnet), sends `REQ <seq>` and
waits for `OK <seq> <count> <token>` before the next request, and records anything wrong:
a lost or repeated reply (wrong seq), a counter that does not advance by exactly one (with
no other client), another token (the process restarted instead of being restored), a
connection error. The longest wait for a reply is what a user of the pod saw of a
migration.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from livepolicy.agent.runtimes import netns as nets


@dataclass
class ClientStats:
    pod_ip: str
    port: int
    local_port: int = 0
    sent: int = 0
    replies: int = 0
    first_count: int | None = None
    last_count: int | None = None
    token: str = ""
    errors: list[str] = field(default_factory=list)
    max_gap_s: float = 0.0
    max_gap_at: float = 0.0  # unix time the longest wait ended
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (unix end, seconds) > slow
    started: float = 0.0
    ended: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors and self.replies == self.sent

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


class StreamClient:
    """`start()`, then `stop()` -> ClientStats. One connection for the whole run."""

    def __init__(self, netns: str, ip: str, port: int, *, interval: float = 0.01,
                 reply_timeout: float = 60.0, slow: float = 0.1, strict_count: bool = True,
                 on_reply: Any = None) -> None:
        self.netns = netns
        self.stats = ClientStats(ip, port)
        self.interval = interval
        self.reply_timeout = reply_timeout
        self.slow = slow
        self.strict_count = strict_count
        self.on_reply = on_reply
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()

    def start(self) -> StreamClient:
        self._thread = threading.Thread(target=self._run, name="lab-client", daemon=True)
        self._thread.start()
        if not self._connected.wait(10):
            raise RuntimeError(f"client did not connect to {self.stats.pod_ip}: "
                               f"{self.stats.errors}")
        return self

    def stop(self) -> ClientStats:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.reply_timeout + 5)
        return self.stats

    def wait_replies(self, n: int, timeout: float = 30.0) -> bool:
        target = self.stats.replies + n
        return nets.wait_for(lambda: self.stats.replies >= target or bool(self.stats.errors),
                             timeout, 0.005)

    def _run(self) -> None:
        st = self.stats
        st.started = time.time()
        try:
            sock = nets.connect_in(self.netns, st.pod_ip, st.port, 10.0)
        except OSError as exc:
            st.errors.append(f"connect: {exc}")
            self._connected.set()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.reply_timeout)
        st.local_port = sock.getsockname()[1]
        self._connected.set()
        buf = b""
        seq = 0
        try:
            while not self._stop.is_set():
                seq += 1
                sent_at = time.monotonic()
                sock.sendall(b"REQ %d\n" % seq)
                st.sent += 1
                while b"\n" not in buf:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("connection closed by the pod")
                    buf += chunk
                line, buf = buf.split(b"\n", 1)
                gap = time.monotonic() - sent_at
                self._check(seq, line, gap)
                if st.errors:
                    break
                if self.interval:
                    self._stop.wait(self.interval)
        except (OSError, ConnectionError) as exc:
            st.errors.append(f"seq {seq}: {type(exc).__name__}: {exc}")
        finally:
            sock.close()
            st.ended = time.time()

    def _check(self, seq: int, line: bytes, gap: float) -> None:
        st = self.stats
        parts = line.decode(errors="replace").split()
        if len(parts) != 4 or parts[0] != "OK":
            st.errors.append(f"seq {seq}: bad reply {line!r}")
            return
        got, count, token = int(parts[1]), int(parts[2]), parts[3]
        if got != seq:
            st.errors.append(f"seq {seq}: reply for seq {got} (lost or repeated reply)")
            return
        if st.token and token != st.token:
            st.errors.append(f"seq {seq}: token changed {st.token} -> {token} (restarted)")
            return
        last = st.last_count
        if last is not None and (count <= last or (self.strict_count and count != last + 1)):
            st.errors.append(f"seq {seq}: counter {last} -> {count}")
            return
        st.token = token
        if st.first_count is None:
            st.first_count = count
        st.last_count = count
        st.replies += 1
        if gap > st.max_gap_s:
            st.max_gap_s, st.max_gap_at = gap, time.time()
        if gap > self.slow:
            st.gaps.append((round(time.time(), 3), round(gap, 4)))
        if self.on_reply is not None:
            self.on_reply(seq, count, gap)
