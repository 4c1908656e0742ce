"""Fixtures for the lab tests: real labs (root, CRIU, namespaces), always torn down.

Each lab gets its own random namespace prefix and state directory, so the tests never touch
a lab a developer has up (`livepolicy lab up` uses the prefix `lpl`).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from livepolicy.agent.client import AgentClient
from livepolicy.agent.crypto import new_key
from livepolicy.agent.runtimes import netns as nets
from livepolicy.lab.lab import Lab

REPO = Path(__file__).resolve().parents[2]
LIVEPOLICY = [sys.executable, "-c", "from livepolicy.cli import main; main()"]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network and pid namespaces, CRIU); running as "
                    f"uid {os.geteuid()}. Run them as root or deselect with -m 'not criu'.",
                    pytrace=False)


def new_prefix() -> str:
    return f"lpt{secrets.token_hex(2)}"


def assert_clean(lab: Lab, prefix: str) -> None:
    """Nothing of the lab is left: namespaces, processes in them, state directories."""
    assert nets.list_netns(f"{prefix}-") == []
    assert not lab.root.exists()
    shm = lab.data.get("shm")
    assert not shm or not Path(shm).exists()


@pytest.fixture
def make_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Lab]]:
    """Build labs; every one is torn down (and checked clean) after the test."""
    made: list[tuple[Lab, str]] = []

    def make(**kwargs: Any) -> Lab:
        require_root()
        prefix = kwargs.pop("prefix", None) or new_prefix()
        root = tmp_path_factory.mktemp("lab") / "state"
        try:
            lab = Lab.up(root, prefix=prefix, **kwargs)
        except BaseException:
            Lab(root).down()
            raise
        made.append((lab, prefix))
        return lab

    yield make
    for lab, prefix in made:
        result = lab.down()
        assert result.leftovers == []
        assert_clean(lab, prefix)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for a module: lab-1, lab-2 on subnet a, lab-3 alone on subnet b."""
    require_root()
    prefix = new_prefix()
    root = tmp_path_factory.mktemp("lab") / "state"
    try:
        the_lab = Lab.up(root, nodes=3, subnets=2, prefix=prefix)
    except BaseException:
        Lab(root).down()
        raise
    try:
        yield the_lab
    finally:
        result = the_lab.down()
        assert result.leftovers == []
        assert_clean(the_lab, prefix)


def cli(lab: Lab, *args: str, timeout: float = 300,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`livepolicy ARGS` in a subprocess, pointed at `lab`."""
    env = {**os.environ, "LIVEPOLICY_LAB_DIR": str(lab.root)}
    return subprocess.run([*LIVEPOLICY, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or REPO, check=False)


def move_policy(tmp_path: Path, pod: str, name: str, transfer: str) -> Path:
    """A policy directory that moves `pod` (by its test label) off lab-1 with `transfer`."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "move.yaml").write_text(f"""\
apiVersion: livepolicy.io/v1alpha1
kind: MigrationPolicy
metadata:
  name: {name}
spec:
  workloads:
    selector:
      matchLabels: {{test: {pod.split("/")[1]}}}
  sources:
    names: [lab-1]
  strategy:
    memoryTransfer: {transfer}
""")
    return policies


def restore_after_source_restart(lab: Lab, pod: str, mid: str, **prepare: Any
                                 ) -> tuple[AgentClient, AgentClient, dict[str, Any]]:
    """Move `pod` from lab-1 to lab-2 through the agents, restarting the source agent
    between the final checkpoint and the transfer; returns the clients (the source's
    new one) and the checkpoint, once the destination restored."""
    _, rec = lab.find_pod(pod)
    key = new_key()
    src, dst = lab.node("lab-1").client(), lab.node("lab-2").client()
    for agent, role, peer in ((src, "source", "lab-2"), (dst, "destination", "lab-1")):
        agent.prepare(mid, role=role, pod=pod, uid=rec.uid, memory_bytes=0, key=key,
                      peer=lab.node(peer).agent_url, **prepare)
    final = src.checkpoint(mid, round=0, final=True)
    lab.restart_agent("lab-1")
    src = lab.node("lab-1").client()
    assert src.status(mid)["phase"] == "checkpointed"
    src.transfer(mid, destination=lab.node("lab-2").agent_url, token=lab.node("lab-2").token())
    dst.restore(mid)
    return src, dst, final
