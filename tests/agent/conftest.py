"""Agents for tests: in-process servers (fast) and real `python -m livepolicy.agent` processes.

Both run the sim runtime with time_scale 0.001, so a 1 GiB pod migrates in milliseconds.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from livepolicy.agent import AgentClient, AgentConfig, fsutil, new_key
from livepolicy.agent.auth import hex_digest
from livepolicy.agent.server import AgentServer

GiB = 2**30
MiB = 2**20
SCALE = 0.001


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process agents skip fsync (only power loss could tell); agent processes keep it."""
    monkeypatch.setattr(fsutil, "SYNC", False)


@dataclass
class Agent:
    """One running agent as a test sees it."""

    node: str
    url: str
    token: str
    state_dir: Path
    client: AgentClient
    server: AgentServer | None = None  # in-process
    proc: subprocess.Popen[bytes] | None = None  # subprocess
    extra: list[str] = field(default_factory=list)

    def stop(self, graceful: bool = True) -> None:
        if self.server is not None:
            self.server.stop()
        if self.proc is not None and self.proc.poll() is None:
            if graceful:
                self.proc.send_signal(signal.SIGTERM)
            else:
                self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _config(node: str, state_dir: Path, **overrides: Any) -> AgentConfig:
    base = AgentConfig(
        node=node,
        token=secrets.token_urlsafe(24),
        state_dir=state_dir,
        port=0,
        time_scale=SCALE,
    )
    return replace(base, **overrides)


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Start an in-process agent; same node name again reuses its state dir (a restart)."""
    started: list[Agent] = []

    def make(node: str = "n1", **overrides: Any) -> Agent:
        state_dir = overrides.pop("state_dir", tmp_path / node)
        exits: list[int] = overrides.pop("exits", [])  # crash faults land here, not os._exit
        config = _config(node, state_dir, **overrides)
        server = AgentServer(config, poll_interval=0.01, exit_hook=exits.append)
        server.start()
        agent = Agent(node, server.url, config.token, state_dir,
                      AgentClient(server.url, config.token, timeout=10), server=server)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.stop()


def spawn(node: str, state_dir: Path, token: str, *extra: str, timeout: float = 15) -> Agent:
    """Start `python -m livepolicy.agent` on port 0 and read its "listening" line."""
    state_dir.mkdir(parents=True, exist_ok=True)
    token_file = state_dir.parent / f"{node}.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    cmd = [
        sys.executable, "-m", "livepolicy.agent",
        "--node", node, "--port", "0", "--token-file", str(token_file),
        "--state-dir", str(state_dir), "--runtime", "sim", "--time-scale", str(SCALE),
        *extra,
    ]
    log = (state_dir.parent / f"{node}.log").open("ab")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
    log.close()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
    finally:
        timer.cancel()
    if not line:
        proc.wait(5)
        raise AssertionError(f"agent {node} did not start (exit {proc.returncode})")
    event = json.loads(line)
    assert event["event"] == "listening" and event["node"] == node
    url = f"http://127.0.0.1:{event['port']}"
    assert event["url"] == url
    return Agent(node, url, token, state_dir, AgentClient(url, token, timeout=10),
                 proc=proc, extra=list(extra))


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One agent for read-mostly tests (auth, validation); it holds pod default/web."""
    config = _config("shared", tmp_path_factory.mktemp("shared"))
    server = AgentServer(config, poll_interval=0.01)
    server.start()
    agent = Agent("shared", server.url, config.token, config.state_dir,
                  AgentClient(server.url, config.token, timeout=10), server=server)
    agent.client.put_pod("default", "web", "uid-web", 1024)
    yield agent
    server.stop()


@pytest.fixture
def spawn_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Start a real agent process; `spawn_agent(node)` again restarts it on the same state."""
    started: list[Agent] = []
    tokens: dict[str, str] = {}

    def make(node: str = "n1", *extra: str) -> Agent:
        token = tokens.setdefault(node, secrets.token_urlsafe(24))
        agent = spawn(node, tmp_path / node, token, *extra)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.stop(graceful=False)


@dataclass
class Migration:
    """Drives one migration of pod default/web between a source and a destination agent."""

    src: Agent
    dst: Agent
    mid: str = "m1"
    pod: str = "default/web"
    uid: str = "uid-web"
    memory: int = 256 * MiB
    key: str = field(default_factory=new_key)
    # what apply gives the source for the upload to the destination (agent/auth.py)
    upload: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def create_pod(self, dirty_rate: int = 20_000_000) -> dict[str, Any]:
        ns, name = self.pod.split("/")
        return self.src.client.put_pod(ns, name, self.uid, self.memory, dirty_rate)

    def prepare(self, memory_transfer: str | None = None) -> None:
        sides = ((self.src, "source", self.dst), (self.dst, "destination", self.src))
        for agent, role, peer in sides:
            grant = hex_digest(self.upload) if role == "destination" else None
            agent.client.prepare(self.mid, role=role, pod=self.pod, uid=self.uid,
                                 memory_bytes=self.memory, key=self.key, peer=peer.url,
                                 memory_transfer=memory_transfer, upload_token_sha256=grant)

    def checkpoint(self, rounds: int = 0) -> dict[str, Any]:
        for r in range(rounds):
            self.src.client.checkpoint(self.mid, round=r, final=False)
        return self.src.client.checkpoint(self.mid, round=rounds, final=True)

    def transfer(self) -> dict[str, Any]:
        return self.src.client.transfer(self.mid, destination=self.dst.url, token=self.upload)

    def run_until(self, phase: str) -> None:
        """Create the pod and run every step before `phase` (a fault-injection phase name)."""
        order = ["prepare", "checkpoint", "transfer", "restore", "verify", "commit"]
        self.create_pod()
        steps: dict[str, Callable[[], object]] = {
            "prepare": self.prepare,
            "checkpoint": self.checkpoint,
            "transfer": self.transfer,
            "restore": lambda: self.dst.client.restore(self.mid),
            "verify": lambda: self.dst.client.verify(self.mid),
        }
        stop_at = "transfer" if phase == "receive" else phase
        stop_at = "commit" if phase in ("rollback", "cleanup") else stop_at
        for step in order[: order.index(stop_at)]:
            steps[step]()

    def pods(self, agent: Agent) -> list[dict[str, Any]]:
        pods = agent.client.list_pods()["pods"]
        return [p for p in pods if f"{p['namespace']}/{p['name']}" == self.pod]


@pytest.fixture
def pair(make_agent: Callable[..., Agent]) -> Migration:
    return Migration(make_agent("n1"), make_agent("n2"))


def image_files(agent: Agent) -> list[Path]:
    root = agent.state_dir / "images"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
