"""Start `sim` agents on loopback for every node of a snapshot, and keep them running.

This is what `livepolicy apply --agents sim` uses for demos and tests: one real agent
process per node (real HTTP, real tokens, state on disk), supervised like a DaemonSet
would be: an agent that crashes is restarted on the same port with the same state, so
its pods survive, as a real node's containers survive an agent restart.

Agents run in their own session, so an apply that is killed (even by SIGKILL) leaves them
running. Each agent's pid is recorded in its directory as soon as it is started; the next
`start()` on the same state directory stops such a leftover agent (after checking that the
pid still is that agent, not a reused pid) before it starts a fresh one. A recorded port
that something else now holds is given up for a new one: after an apply restarts, nothing
needs the old port (recovery only rolls back or commits; those calls carry no peer URL).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from livepolicy.agent.client import AgentClient, AgentClientError
from livepolicy.agent.launch import await_listening
from livepolicy.apply.engine import AgentEndpoint
from livepolicy.facts.model import ClusterFacts
from livepolicy.planner.estimate import memory_of

START_TIMEOUT_S = 30.0  # an agent that has not announced its port by then is killed
SAME_PORT_TRIES = 50  # a restarted agent waits this many times 0.1 s for its old port
FRESH_PORT_TRIES = 3  # a fresh start gives a recorded port up sooner


@dataclass
class _Agent:
    node: str
    architecture: str
    state_dir: Path
    token: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None


def _proc_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, which an init that never reaps may leave, is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if Path("/proc/self/stat").exists():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the agent binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _is_agent_of(pid: int, token_file: Path) -> bool:
    """Is `pid` a live sim agent started for this agent directory (not a reused pid)?"""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"livepolicy.agent" in args and os.fsencode(token_file) in args and \
        _proc_alive(pid)


def stop_leftover_agent(agent_dir: Path, grace_s: float = 5.0) -> bool:
    """Stop the agent recorded in `agent_dir/pid` if it still runs; True if one was stopped."""
    pid_file = agent_dir / "pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    stopped = False
    if _is_agent_of(pid, agent_dir / "token"):
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while _proc_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not _proc_alive(pid):
                break
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


class LocalSimAgents:
    """A pool of supervised sim agents; `endpoint(node)` is what the engine asks."""

    def __init__(self, state_dir: Path, facts: ClusterFacts, time_scale: float = 0.01,
                 bandwidth: str = "5Gbps", post_copy: bool = True) -> None:
        # Absolute, so that a later run (from another working directory) recognizes the
        # agents this one leaves behind by the paths on their command lines.
        self.root = (state_dir / "sim-agents").absolute()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.time_scale = time_scale
        self.bandwidth = bandwidth
        self.post_copy = post_copy  # sim nodes offer lazy pages (as amd64 nodes with uffd)
        self.agents: dict[str, _Agent] = {}
        for n in facts.nodes:
            d = self.root / n.name
            d.mkdir(exist_ok=True, mode=0o700)
            token_file = d / "token"
            if not token_file.exists():
                fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, secrets.token_urlsafe(32).encode())
                os.close(fd)
            port_file = d / "port"
            try:
                port = int(port_file.read_text())
            except (OSError, ValueError):
                port = 0
            self.agents[n.name] = _Agent(n.name, n.architecture or "amd64", d,
                                         token_file.read_text().strip(), port)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0
        self.leftovers_stopped = 0

    def _command(self, a: _Agent, port: int) -> list[str]:
        return [sys.executable, "-m", "livepolicy.agent", "--node", a.node, "--port",
                str(port), "--token-file", str(a.state_dir / "token"), "--state-dir",
                str(a.state_dir / "state"), "--runtime", "sim", "--architecture",
                a.architecture, "--time-scale", str(self.time_scale), "--bandwidth",
                self.bandwidth, *(["--post-copy"] if self.post_copy else [])]

    def _spawn(self, a: _Agent, same_port_tries: int = SAME_PORT_TRIES) -> None:
        """Start `a`'s agent, on its recorded port while it can be had, else on a new one."""
        if same_port_tries < SAME_PORT_TRIES and a.port and not _port_free(a.port):
            same_port_tries = 0  # a fresh start: something else has the port now
        for i in range(same_port_tries + 1):
            port = a.port if i < same_port_tries else 0
            with (a.state_dir / "agent.log").open("ab") as log:
                proc = subprocess.Popen(self._command(a, port), stdout=subprocess.PIPE,
                                        stderr=log, start_new_session=True)
            # Recorded before anything else, so a kill of this process right now still
            # lets the next run find (and stop) the agent.
            (a.state_dir / "pid").write_text(str(proc.pid))
            info = await_listening(proc, START_TIMEOUT_S)
            if info is not None:
                a.port = int(info["port"])
                (a.state_dir / "port").write_text(str(a.port))
                a.proc = proc
                return
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            if port == 0:
                break
            time.sleep(0.1)  # port still held by the previous process: try again
        raise RuntimeError(f"sim agent for {a.node} did not start (see "
                           f"{a.state_dir / 'agent.log'})")

    def _start_one(self, a: _Agent) -> None:
        if stop_leftover_agent(a.state_dir):
            with self._lock:
                self.leftovers_stopped += 1
        self._spawn(a, FRESH_PORT_TRIES)

    def start(self) -> None:
        errors: list[BaseException] = []

        def run(a: _Agent) -> None:
            try:
                self._start_one(a)
            except (RuntimeError, OSError) as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(a,)) for a in self.agents.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._watcher = threading.Thread(target=self._supervise, daemon=True)
        self._watcher.start()
        if errors:
            raise errors[0]

    def _supervise(self) -> None:
        while not self._stop.wait(0.05):
            for a in self.agents.values():
                with self._lock:
                    if a.proc is not None and a.proc.poll() is not None and \
                            not self._stop.is_set():
                        self.restarts += 1
                        if a.proc.stdout:
                            a.proc.stdout.close()
                        try:
                            self._spawn(a)
                        except (RuntimeError, OSError):
                            a.proc = None  # calls to it fail; the engine reports that

    def endpoint(self, node: str) -> AgentEndpoint:
        a = self.agents[node]
        return AgentEndpoint(node, f"http://127.0.0.1:{a.port}", a.token)

    def client(self, node: str, timeout: float = 10.0) -> AgentClient:
        ep = self.endpoint(node)
        return AgentClient(ep.url, ep.token, timeout=timeout)

    def seed(self, facts: ClusterFacts) -> int:
        """Create each running snapshot pod on its node unless some agent already has it."""
        known: set[str] = set()
        for node in self.agents:
            for p in self.client(node).list_pods()["pods"]:
                known.add(p["uid"] or f"{p['namespace']}/{p['name']}")
        created = 0
        for p in facts.pods:
            if p.phase != "Running" or p.node not in self.agents:
                continue
            if (p.uid or p.key) in known:
                continue
            try:
                self.client(p.node).put_pod(p.namespace, p.name, p.uid or p.name,
                                            memory_of(p)[0], 50 * 2**20)
                created += 1
            except AgentClientError as exc:
                raise RuntimeError(f"cannot create sim pod {p.key} on {p.node}: {exc}") from exc
        return created

    def disagreements(self, facts: ClusterFacts) -> list[str]:
        """Pods an agent runs that the snapshot runs on another node (`ns/name: on X,
        snapshot: Y`): what an earlier simulation in the same state directory left."""
        want = {(p.uid or p.key): p.node for p in facts.pods
                if p.phase == "Running" and p.node in self.agents}
        out = []
        for node in sorted(self.agents):
            for p in self.client(node).list_pods()["pods"]:
                key = f"{p['namespace']}/{p['name']}"
                where = want.get(p["uid"] or key)
                if where is not None and where != node:
                    out.append(f"{key}: on {node}, snapshot: {where}")
        return sorted(out)

    def reseed(self, facts: ClusterFacts) -> int:
        """Start the agents afresh from the snapshot: their pods, migrations and images
        are dropped (stopped first), then every running snapshot pod is created on its
        node. For a new plan only: a resumed run needs the agents' state as it was."""
        self.stop()
        for a in self.agents.values():
            shutil.rmtree(a.state_dir / "state", ignore_errors=True)
        self._stop = threading.Event()
        self.start()
        return self.seed(facts)

    def stop(self) -> None:
        self._stop.set()
        if self._watcher:
            self._watcher.join()
        with self._lock:
            for a in self.agents.values():
                if a.proc and a.proc.poll() is None:
                    a.proc.terminate()
            for a in self.agents.values():
                if a.proc:
                    try:
                        a.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        a.proc.kill()
                        a.proc.wait(5)
                    if a.proc.stdout:
                        a.proc.stdout.close()
                    (a.state_dir / "pid").unlink(missing_ok=True)
                    a.proc = None
