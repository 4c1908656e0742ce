"""Leader handover between real `livepolicy controller` processes and the real
kube-apiserver: only the leader writes; after `kill -9` a standby takes over once the
Lease expires; after SIGTERM the Lease is released and a standby takes over at once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from livepolicy.kube.client import KubeClient
from livepolicy.kube.resources import LEASES
from tests.conftest import ROOT
from tests.controller.support import (
    LEASE_NS,
    POLICIES,
    converged,
    ensure_namespace,
    labelled,
    metric,
    new_eligible_pod,
    seed_synth,
    wait_for,
)
from tests.support.envtest import KubeTestEnv

pytestmark = pytest.mark.kube
DURATION = 6  # --lease-duration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    def __init__(self, env: KubeTestEnv, lease: str, name: str, logs: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.log_path = logs / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livepolicy", "controller",
             "--kubeconfig", str(env.kubeconfig_path), "--policies", str(POLICIES),
             "--namespace", LEASE_NS, "--lease-name", lease,
             "--lease-duration", str(DURATION), "--identity", name,
             "--metrics-address", f"127.0.0.1:{self.port}", "--debounce", "0.2", "--json"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def get(self, path: str) -> tuple[int, str]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                        timeout=3) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float | None:
        status, text = self.get("/metrics")
        return metric(text, name, **labels) if status == 200 else None

    def leading(self) -> bool:
        return self.metric("livepolicy_controller_is_leader") == 1

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"event": "non-json", "line": line})
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


class Pool:
    """Replicas sharing one Lease; all killed at the end of the test."""

    def __init__(self, env: KubeTestEnv, logs: Path) -> None:
        self.env, self.logs = env, logs
        self.lease = f"lp-handover-{uuid.uuid4().hex[:6]}"
        self.started: list[Replica] = []

    def start(self, name: str) -> Replica:
        r = Replica(self.env, self.lease, name, self.logs)
        self.started.append(r)
        return r


@pytest.fixture()
def pool(empty_cluster: KubeClient, kube_env: KubeTestEnv, tmp_path: Path
         ) -> Iterator[Pool]:
    seed_synth(empty_cluster)
    ensure_namespace(empty_cluster)
    p = Pool(kube_env, tmp_path)
    yield p
    for r in p.started:
        r.stop()


def _holder(client: KubeClient, lease: str) -> str:
    got = client.get_optional(LEASES, lease, LEASE_NS)
    return str(((got or {}).get("spec") or {}).get("holderIdentity") or "")


def _writes(r: Replica) -> float:
    return r.metric("livepolicy_controller_label_writes_total") or 0.0


def test_leader_handover(pool: Pool, empty_cluster: KubeClient) -> None:
    cluster = empty_cluster
    a = pool.start("replica-a")
    wait_for("replica-a to lead", a.leading, timeout=60)
    wait_for("the first convergence", lambda: converged(cluster), timeout=60)
    b = pool.start("replica-b")
    wait_for("replica-b to be ready", b.ready, timeout=60)
    assert not b.leading() and _holder(cluster, pool.lease) == "replica-a"
    assert _writes(a) > 0 and _writes(b) == 0  # only the leader writes

    # kill -9: nothing is released; replica-b waits for the Lease to expire.
    a.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    a.proc.wait(10)
    pod = new_eligible_pod(cluster, "after-kill")
    wait_for("replica-b to take over", b.leading, timeout=DURATION + 20)
    took = time.monotonic() - killed
    assert took >= DURATION - 2, f"took over after {took:.1f} s, before the Lease expired"
    assert _holder(cluster, pool.lease) == "replica-b"
    wait_for("the new pod labelled by replica-b", lambda: pod in labelled(cluster))
    assert wait_for("convergence", lambda: converged(cluster))
    assert _writes(b) > 0

    # SIGTERM: replica-b releases the Lease on its way out; replica-c takes it at once.
    c = pool.start("replica-c")
    wait_for("replica-c to be ready", c.ready, timeout=60)
    assert not c.leading()
    b.proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    wait_for("replica-c to take over", c.leading, timeout=DURATION + 20)
    quick = time.monotonic() - stopped
    assert quick < DURATION / 2, f"SIGTERM handover took {quick:.1f} s"
    print(f"handover after kill -9: {took:.1f} s; after SIGTERM: {quick:.1f} s "
          f"(lease {DURATION} s)")
    assert b.proc.wait(20) == 0
    events = [e["event"] for e in b.events()]
    assert "signal" in events and events[-1] == "stopped"
    assert _holder(cluster, pool.lease) == "replica-c"
    pod2 = new_eligible_pod(cluster, "after-term")
    wait_for("the next pod labelled by replica-c", lambda: pod2 in labelled(cluster))
    leader_events = [e for e in c.events() if e["event"] == "leader"]
    assert len(leader_events) == 1 and leader_events[0]["identity"] == "replica-c"


def test_sigterm_exits_cleanly(pool: Pool, empty_cluster: KubeClient) -> None:
    """SIGTERM at any moment (during the first assessment, while idle): exit 0, the Lease
    released, no traceback; several rounds, since closing live watches is racy."""
    for i in range(3):
        r = pool.start(f"replica-term-{i}")
        wait_for("the replica to lead", r.leading, timeout=60)
        if i:  # round 0 stops during the first assessment, the others once idle
            wait_for("convergence", lambda: converged(empty_cluster), timeout=60)
        r.proc.send_signal(signal.SIGTERM)
        assert r.proc.wait(30) == 0, r.log_path.read_text()[-3000:]
        text = r.log_path.read_text()
        assert "Traceback" not in text and "shutdown-error" not in text, text[-3000:]
        assert [e["event"] for e in r.events()][-1] == "stopped"
        assert _holder(empty_cluster, pool.lease) == ""  # released
