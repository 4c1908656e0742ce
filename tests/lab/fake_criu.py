"""A stand-in for CRIU on a kernel *with* soft-dirty tracking, for the pre-copy path.

It speaks the command line the `criu` runtime uses and logs every call (JSON lines in
$LIVEPOLICY_FAKE_CRIU_LOG):

- `check [--feature X]`: everything is supported, `mem_dirty_track` included;
- `pre-dump -t PID -D DIR --track-mem [--prev-images-dir ../pre-N]`: writes a pages file
  that shrinks each round (as the dirty set would) and CRIU's `parent` link;
- `dump ... [--prev-images-dir ../pre-N --track-mem]`: asks the lab pod for its state
  (token, counter), kills it, writes that state and a pages file;
- `restore -D DIR ... -d --pidfile F`: checks the whole parent chain arrived (every
  pre-dump directory with its pages), then starts the pod program again with the saved
  token and counter (so the agent's verification passes) and writes the pid file.

The process is restarted, not restored, so TCP connections do not survive: the tests use
it only for the agents' protocol and the image layout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROUND_BYTES = [8 << 20, 2 << 20, 512 << 10, 128 << 10, 32 << 10]


def log_call(argv: list[str]) -> None:
    path = os.environ.get("LIVEPOLICY_FAKE_CRIU_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"argv": argv, "time": time.time()}) + "\n")


def opt(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def pod_args(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def stats(ip: str, port: int) -> dict[str, object]:
    with socket.create_connection((ip, port), timeout=2) as s:
        s.sendall(b"STATS\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)  # type: ignore[no-any-return]


def write_images(directory: Path, nbytes: int, prev: str | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pages-1.img").write_bytes(os.urandom(1024) * (nbytes // 1024))
    (directory / "pagemap-1.img").write_bytes(b"fake pagemap")
    if prev:
        os.symlink(prev, directory / "parent")


def main(argv: list[str]) -> int:
    log_call(argv)
    if argv[:1] == ["--version"]:
        print("Version: 4.2.1 (fake)")
        return 0
    cmd = argv[0] if argv else ""
    if cmd == "check":
        feature = opt(argv, "--feature")
        print(f"{feature} is supported" if feature else "Looks good.")
        return 0
    directory = Path(opt(argv, "-D") or ".")
    prev = opt(argv, "--prev-images-dir")
    if cmd == "pre-dump":
        if "--track-mem" not in argv:
            print("pre-dump needs --track-mem", file=sys.stderr)
            return 1
        n = len(list(directory.parent.glob("pre-*"))) - 1
        write_images(directory, ROUND_BYTES[min(n, len(ROUND_BYTES) - 1)], prev)
        return 0
    if cmd == "dump":
        pid = int(opt(argv, "-t") or 0)
        args = pod_args(pid)
        state = stats(opt(args, "--ip") or "", int(opt(args, "--port") or 0))
        os.kill(pid, signal.SIGKILL)
        write_images(directory, 16 << 10, prev)
        (directory / "inventory.img").write_bytes(b"fake inventory")
        (directory / "fake.json").write_text(json.dumps({"args": args, "stats": state}))
        return 0
    if cmd == "restore":
        d = directory
        while (d / "parent").is_symlink():  # the whole pre-dump chain must be here
            d = (d / os.readlink(d / "parent")).resolve()
            if not (d / "pages-1.img").is_file():
                print(f"missing parent images in {d}", file=sys.stderr)
                return 1
        saved = json.loads((directory / "fake.json").read_text())
        args = [a for a in saved["args"]]
        args += ["--token", str(saved["stats"]["token"]),
                 "--start-count", str(saved["stats"]["count"])]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        ip, port = opt(args, "--ip") or "", int(opt(args, "--port") or 0)
        for _ in range(500):
            try:
                stats(ip, port)
                break
            except OSError:
                time.sleep(0.01)
        pidfile = opt(argv, "--pidfile")
        if pidfile:
            Path(pidfile).write_text(str(proc.pid))
        return 0
    print(f"fake criu: unsupported command {argv}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
