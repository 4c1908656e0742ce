"""The lab's pod program: a TCP request/reply counter whose state lives only in memory.

Run as a script (stdlib only, single thread, so CRIU has one task to freeze):

    python3 -I -S podserver.py --ip 198.18.1.100 --port 7000 [--memory BYTES]
        [--dirty-rate BYTES_PER_S] [--token HEX] [--start-count N]

Protocol, one line per request on any number of connections:
    REQ <seq>   -> "OK <seq> <count> <token>"  (count: requests served since start, +1 each)
    STATS       -> one JSON line {"count", "token", "pid", "memory_bytes",
                   "dirty_rate_bytes", "dirtied_bytes", "connections", "started"}
    ECHO <text> -> "<text>"
    anything    -> "ERR"

`token` is random per start, so a restarted (instead of restored) process is told apart
from the one that was checkpointed; `count` only grows. `--memory` holds that many bytes,
every page touched; `--dirty-rate` keeps rewriting pages at that rate (round-robin over
the memory), as a busy application would.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import time

PAGE = 4096
SLICE = 16  # pages written between checks for clients when memory is slow
SLOW_SLICE_S = 0.001


def main() -> None:
    p = argparse.ArgumentParser(description="lab pod: TCP request/reply counter")
    p.add_argument("--ip", default="0.0.0.0")
    p.add_argument("--port", type=int, default=7000)
    p.add_argument("--memory", type=int, default=0, help="bytes of memory to hold")
    p.add_argument("--dirty-rate", type=int, default=0, help="bytes/s of memory to rewrite")
    p.add_argument("--token", default="")
    p.add_argument("--start-count", type=int, default=0)
    args = p.parse_args()
    token = args.token or os.urandom(8).hex()
    mem = bytearray(args.memory)
    npages = len(mem) // PAGE
    if npages:
        mem[::PAGE] = b"\x01" * len(range(0, len(mem), PAGE))
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.ip, args.port))
    srv.listen(128)
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    buffers: dict[socket.socket, bytes] = {}
    count = args.start_count
    started = time.time()
    dirty_rate = args.dirty_rate if npages else 0
    dirtied = 0
    page_cursor = 0
    stamp = 1
    carry = 0.0
    burst = max(1.0, dirty_rate * 0.01 / PAGE)
    last = time.monotonic()

    def reply(line: bytes) -> bytes:
        nonlocal count
        if line.startswith(b"REQ "):
            count += 1
            return b"OK %s %d %s\n" % (line[4:].strip(), count, token.encode())
        if line == b"STATS":
            return json.dumps({
                "count": count, "token": token, "pid": os.getpid(),
                "memory_bytes": len(mem), "dirty_rate_bytes": dirty_rate,
                "dirtied_bytes": dirtied, "connections": len(buffers), "started": started,
            }).encode() + b"\n"
        if line.startswith(b"ECHO "):
            return line[5:] + b"\n"
        return b"ERR\n"

    def serve(events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, _ in events:
            sock = key.fileobj
            if sock is srv:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ)
                buffers[conn] = b""
                continue
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                buffers.pop(sock, None)
                sock.close()
                continue
            buf = buffers[sock] + data
            out = b""
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                out += reply(line.rstrip(b"\r"))
            buffers[sock] = buf[-65536:]
            if out:
                try:
                    sock.setblocking(True)
                    sock.settimeout(5)
                    sock.sendall(out)
                    sock.setblocking(False)
                except OSError:
                    sel.unregister(sock)
                    buffers.pop(sock, None)
                    sock.close()

    while True:
        serve(sel.select(timeout=0.005 if dirty_rate else None))
        if dirty_rate:
            now = time.monotonic()
            # At most 10 ms of writing per turn, backlog dropped, and clients served between
            # slices whenever memory is slow (page faults while post-copy brings it over):
            # a busy application keeps answering instead of catching up first.
            carry = min(carry + (now - last) * dirty_rate / PAGE, burst)
            last = now
            n = min(int(carry), npages)
            carry -= n
            while n > 0:
                take = min(n, npages - page_cursor, SLICE)
                start = page_cursor * PAGE
                t0 = time.monotonic()
                mem[start : start + take * PAGE : PAGE] = bytes([stamp]) * take
                page_cursor = (page_cursor + take) % npages
                if page_cursor == 0:
                    stamp = stamp % 255 + 1
                dirtied += take * PAGE
                n -= take
                if n and time.monotonic() - t0 > SLOW_SLICE_S:
                    serve(sel.select(timeout=0))


if __name__ == "__main__":
    main()
