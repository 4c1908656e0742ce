"""Start `sim` agents on loopback for every node of a snapshot, and keep them running.

This is what `livepolicy apply --agents sim` uses for demos and tests: one real agent
process per node (real HTTP, real tokens, state on disk), supervised like a DaemonSet
would be: an agent that crashes is restarted on the same port with the same state, so
its pods survive, as a real node's containers survive an agent restart.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from livepolicy.agent.client import AgentClient, AgentClientError
from livepolicy.apply.engine import AgentEndpoint
from livepolicy.facts.model import ClusterFacts
from livepolicy.planner.estimate import memory_of


@dataclass
class _Agent:
    node: str
    architecture: str
    state_dir: Path
    token: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None


class LocalSimAgents:
    """A pool of supervised sim agents; `endpoint(node)` is what the engine asks."""

    def __init__(self, state_dir: Path, facts: ClusterFacts, time_scale: float = 0.01,
                 bandwidth: str = "5Gbps") -> None:
        self.root = state_dir / "sim-agents"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.time_scale = time_scale
        self.bandwidth = bandwidth
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
            port = int(port_file.read_text()) if port_file.exists() else 0
            self.agents[n.name] = _Agent(n.name, n.architecture or "amd64", d,
                                         token_file.read_text().strip(), port)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    def _spawn(self, a: _Agent) -> None:
        cmd = [sys.executable, "-m", "livepolicy.agent", "--node", a.node, "--port",
               str(a.port), "--token-file", str(a.state_dir / "token"), "--state-dir",
               str(a.state_dir / "state"), "--runtime", "sim", "--architecture",
               a.architecture, "--time-scale", str(self.time_scale), "--bandwidth",
               self.bandwidth]
        for _ in range(50):
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line:
                info = json.loads(line)
                a.port = int(info["port"])
                (a.state_dir / "port").write_text(str(a.port))
                a.proc = proc
                return
            proc.wait()
            time.sleep(0.1)  # port still held by the previous process: try again
        raise RuntimeError(f"sim agent for {a.node} did not start")

    def start(self) -> None:
        threads = [threading.Thread(target=self._spawn, args=(a,)) for a in self.agents.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._watcher = threading.Thread(target=self._supervise, daemon=True)
        self._watcher.start()

    def _supervise(self) -> None:
        while not self._stop.wait(0.05):
            for a in self.agents.values():
                with self._lock:
                    if a.proc is not None and a.proc.poll() is not None and \
                            not self._stop.is_set():
                        self.restarts += 1
                        self._spawn(a)

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

    def stop(self) -> None:
        self._stop.set()
        if self._watcher:
            self._watcher.join()
        for a in self.agents.values():
            if a.proc and a.proc.poll() is None:
                a.proc.terminate()
        for a in self.agents.values():
            if a.proc:
                try:
                    a.proc.wait(5)
                except subprocess.TimeoutExpired:
                    a.proc.kill()
                if a.proc.stdout:
                    a.proc.stdout.close()
