"""Integration tests for scripts/setup-criu.sh: the CRIU it installs really works here.

They run the (idempotent) setup script, check that `criu check` is happy, and checkpoint and
restore a real process that lives in its own network and pid namespace, as a pod would, with
an established TCP connection. They need root and take a few seconds once CRIU is installed
(the first install downloads ~8 MB from Debian sid and takes ~10 s).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.criu

REPO = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO / "scripts" / "setup-criu.sh"

POD_ADDR = "198.18.0.2"  # benchmarking range, only inside the test's own netns
POD_PORT = 7070

# The "pod": a counter that also pings itself over an established TCP connection and tells
# its state to anyone who connects. `token` is random per start, so a restart (instead of a
# restore) cannot go unnoticed. Its tracebacks go to the file named by argv[1]: fd 2 stays
# /dev/null, which unshare also writes to after the dump (a shared, growing log file would
# fail CRIU's size check on restore).
COUNTER_PROGRAM = f"""
import os, socket, sys, time
sys.stderr = open(sys.argv[1], "w", buffering=1)
addr = ({POD_ADDR!r}, {POD_PORT})
token = os.urandom(8).hex()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(addr)
srv.listen(8)
a = socket.create_connection(addr)
b, _ = srv.accept()
srv.settimeout(0.02)
count = echoes = 0
while True:
    count += 1
    a.sendall(b"x")
    if b.recv(1) == b"x":
        echoes += 1
    try:
        c, _ = srv.accept()
    except TimeoutError:
        continue
    with c:
        c.sendall(f"{{count}} {{echoes}} {{os.getpid()}} {{token}}\\n".encode())
"""

QUERY_PROGRAM = f"""
import socket
with socket.create_connection(({POD_ADDR!r}, {POD_PORT}), timeout=2) as s:
    print(s.recv(200).decode().strip())
"""


@dataclass(frozen=True)
class CounterState:
    count: int
    echoes: int
    pid_in_ns: int
    token: str


def _run(
    cmd: list[str], timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        pytest.fail(
            f"command failed (rc={res.returncode}): {' '.join(cmd)}\n"
            f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"
        )
    return res


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "the criu integration tests must run as root (CRIU, network and pid namespaces "
            f"need it); running as uid {os.geteuid()}. Run them as root or deselect with "
            "-m 'not criu'.",
            pytrace=False,
        )


def _run_setup() -> tuple[Path, float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    res = _run(["bash", str(SETUP_SCRIPT)], timeout=900)
    elapsed = time.monotonic() - start
    lines = res.stdout.strip().splitlines()
    assert lines, f"setup-criu.sh printed no wrapper path; stderr:\n{res.stderr}"
    return Path(lines[-1]), elapsed, res


@pytest.fixture(scope="module")
def criu() -> Path:
    """Path of the CRIU wrapper installed by scripts/setup-criu.sh."""
    _require_root()
    wrapper, _, _ = _run_setup()
    assert wrapper.is_absolute(), wrapper
    assert os.access(wrapper, os.X_OK), f"{wrapper} is not executable"
    assert not wrapper.resolve().is_relative_to(REPO), "CRIU must be cached outside the repo"
    return wrapper


def test_setup_is_idempotent_and_fast(criu: Path) -> None:
    wrapper, elapsed, res = _run_setup()
    assert wrapper == criu
    assert "already installed" in res.stderr
    assert elapsed < 5, f"second run of setup-criu.sh took {elapsed:.1f}s"


def test_criu_version_and_check(criu: Path) -> None:
    version = _run([str(criu), "--version"]).stdout
    m = re.search(r"Version:\s*(\d+)\.(\d+)(?:\.(\d+))?", version)
    assert m, version
    assert tuple(int(x or 0) for x in m.groups()) >= (4, 2, 1), version
    res = _run([str(criu), "check"], check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Looks good" in out, out


@pytest.mark.parametrize("feature", ["mem_dirty_track", "uffd", "uffd-noncoop"])
def test_feature_probe_is_decisive(criu: Path, feature: str) -> None:
    """The strategy is chosen from these probes: each must answer yes or no, not fail oddly."""
    res = _run([str(criu), "check", "--feature", feature], check=False)
    out = res.stdout + res.stderr
    if res.returncode == 0:
        assert f"{feature} is supported" in out, out
    else:
        assert "Unknown feature" not in out, out
        if feature == "mem_dirty_track":
            assert "Dirty tracking is OFF" in out, out


def test_pipe_max_size_raised(criu: Path) -> None:
    assert int(Path("/proc/sys/fs/pipe-max-size").read_text()) >= 4 * 1024 * 1024


class Pod:
    """A network namespace with its own address and a counter process in its own pid ns."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.netns_path = f"/run/netns/{name}"
        self.launcher: subprocess.Popen[bytes] | None = None
        self.host_pid = 0

    def create_netns(self) -> None:
        _run(["ip", "netns", "add", self.name])
        for cmd in (
            ["link", "set", "lo", "up"],
            # A veth pair with both ends inside the pod's netns: nothing touches the host's.
            ["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"],
            ["addr", "add", f"{POD_ADDR}/24", "dev", "eth0"],
            ["link", "set", "peer0", "up"],
            ["link", "set", "eth0", "up"],
        ):
            _run(["ip", "-n", self.name, *cmd])

    def in_netns(self, *cmd: str) -> list[str]:
        return ["nsenter", f"--net={self.netns_path}", *cmd]

    def start_counter(self, log: Path, timeout: float = 30) -> None:
        """Start the counter and wait until it answers.

        The wait is long because a loaded two-CPU CI machine can take seconds to start
        Python; a counter that exits fails at once, with its traceback from `log`."""
        counter = [sys.executable, "-c", COUNTER_PROGRAM, str(log)]
        self.launcher = subprocess.Popen(
            self.in_netns("unshare", "--pid", "--fork", "setsid", *counter),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        children = Path(f"/proc/{self.launcher.pid}/task/{self.launcher.pid}/children")
        deadline = time.monotonic() + timeout
        while not self.host_pid:
            with contextlib.suppress(OSError, IndexError):
                self.host_pid = int(children.read_text().split()[0])
            self._fail_if_exited(log)
            if time.monotonic() > deadline:
                pytest.fail("counter process did not start")
            time.sleep(0.02)
        self.query(max(deadline - time.monotonic(), 0), starting=log)

    def _fail_if_exited(self, log: Path) -> None:
        assert self.launcher is not None
        if (rc := self.launcher.poll()) is not None:
            pytest.fail(f"counter exited with rc={rc} before answering:\n{_log_tail(log)}")

    def query(self, timeout: float = 5, starting: Path | None = None) -> CounterState:
        """The counter's state; `starting` (its log) while it has yet to answer once."""
        deadline = time.monotonic() + timeout
        while True:
            res = _run(self.in_netns(sys.executable, "-c", QUERY_PROGRAM), check=False, timeout=10)
            if res.returncode == 0 and res.stdout.strip():
                count, echoes, pid, token = res.stdout.split()
                return CounterState(int(count), int(echoes), int(pid), token)
            err_lines = res.stderr.strip().splitlines()
            last = err_lines[-1] if err_lines else f"rc={res.returncode}"
            if starting is not None:
                self._fail_if_exited(starting)
            if time.monotonic() > deadline:
                who = f"counter {_proc_state(self.host_pid)}" if starting else f"pod {self.name}"
                pytest.fail(f"{who} does not answer: {last}")
            time.sleep(0.05)

    def cleanup(self) -> None:
        pids = _run(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        if self.launcher is not None and self.launcher.poll() is None:
            self.launcher.kill()
        if self.launcher is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.launcher.wait(timeout=5)
        _run(["ip", "netns", "del", self.name], check=False)


@pytest.fixture
def pod() -> Iterator[Pod]:
    _require_root()
    p = Pod(f"lpcriu-test-{os.getpid()}")
    _run(["ip", "netns", "del", p.name], check=False)  # leftover of a killed run
    try:
        p.create_netns()
        yield p
    finally:
        p.cleanup()
        assert not Path(p.netns_path).exists(), f"netns {p.name} not removed"


def _proc_state(pid: int) -> str:
    """`pid (state) wchan=...`, to tell a slow start from a stuck one in a failure."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} ({state}) wchan={wchan or '-'}"


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def test_dump_restore_keeps_counter_and_tcp(criu: Path, pod: Pod, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    pidfile = tmp_path / "restored.pid"

    pod.start_counter(tmp_path / "counter.err")
    before = pod.query()
    assert before.pid_in_ns == 1, "the counter should be PID 1 of its own pid namespace"
    time.sleep(0.2)
    at_dump = pod.query()
    assert at_dump.count > before.count and at_dump.echoes > before.echoes

    t0 = time.monotonic()
    dump_cmd = [str(criu), "dump", "-t", str(pod.host_pid), "-D", str(images)]
    dump_cmd += ["-o", "dump.log", "-v4", "--tcp-established", "--shell-job"]
    dump_cmd += ["--network-lock", "nftables"]
    dump = _run(pod.in_netns(*dump_cmd), check=False)
    dump_s = time.monotonic() - t0
    assert dump.returncode == 0, f"criu dump failed:\n{_log_tail(images / 'dump.log')}"
    assert pod.launcher is not None
    pod.launcher.wait(timeout=5)  # criu dump kills the process: its pid namespace ends
    assert not Path(f"/proc/{pod.host_pid}").exists()
    assert list(images.glob("tcp-stream-*.img")), "no established TCP connection was dumped"

    t0 = time.monotonic()
    restore_cmd = [str(criu), "restore", "-D", str(images), "-o", "restore.log", "-v4"]
    restore_cmd += ["--tcp-established", "--shell-job", "-d", "--pidfile", str(pidfile)]
    restore = _run(pod.in_netns(*restore_cmd), check=False)
    restore_s = time.monotonic() - t0
    assert restore.returncode == 0, f"criu restore failed:\n{_log_tail(images / 'restore.log')}"
    restored_pid = int(pidfile.read_text().strip())
    assert Path(f"/proc/{restored_pid}").exists()

    after = pod.query()
    assert after.token == before.token, "the process was restarted, not restored"
    assert after.pid_in_ns == 1
    assert after.count >= at_dump.count, (at_dump, after)
    time.sleep(0.2)
    later = pod.query()
    assert later.count > after.count, "restored counter does not advance"
    assert later.echoes > after.echoes, "established TCP connection does not work after restore"

    tables = _run(pod.in_netns("nft", "list", "tables")).stdout
    assert "CRIU" not in tables.upper(), f"criu left its network lock behind:\n{tables}"
    print(
        f"criu dump {dump_s:.3f}s, restore {restore_s:.3f}s, count {at_dump.count}->{later.count}"
    )
