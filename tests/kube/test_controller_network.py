"""Dropped connections, for real: the controller reaches the real kube-apiserver through
a TCP relay on loopback, and the test cuts every connection (what a load balancer or an
apiserver restart does). Each watch fails, backs off, resumes from its last
resourceVersion (no relist needed), and later changes are still labelled."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from livepolicy.kube.client import KubeClient
from tests.controller.support import (
    converged,
    labelled,
    metric,
    new_eligible_pod,
    options,
    running,
    scrape,
    seed_synth,
    wait_for,
)
from tests.support.envtest import KubeTestEnv

pytestmark = pytest.mark.kube


class Relay:
    """A loopback TCP relay to `target`; `cut()` closes every open connection."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True, name="relay").start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.conns += [client, upstream]
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        with self._lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        return len(conns) // 2

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self.cut()


@pytest.fixture()
def relay(kube_env: KubeTestEnv) -> Iterator[Relay]:
    host, port = kube_env.server.removeprefix("https://").rsplit(":", 1)
    r = Relay((host, int(port)))
    yield r
    r.close()


def _kubeconfig_via(env: KubeTestEnv, port: int, path: Path) -> Path:
    doc = orjson.loads(env.kubeconfig_path.read_bytes())
    for c in doc["clusters"]:
        c["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path.write_bytes(orjson.dumps(doc))
    return path


def test_watches_resume_after_dropped_connections(empty_cluster: KubeClient,
                                                  kube_env: KubeTestEnv, relay: Relay,
                                                  tmp_path: Path) -> None:
    seed_synth(empty_cluster)
    kc = _kubeconfig_via(kube_env, relay.port, tmp_path / "via-relay.json")
    with running(str(kc), options()) as (ctl, log):
        wait_for("the first convergence", lambda: converged(empty_cluster))
        wait_for("every watch open", lambda: relay.accepted >= len(ctl.reflectors))
        lists_before = metric(scrape(ctl)[1], "livepolicy_controller_relists_total")
        assert relay.cut() >= len(ctl.reflectors)
        wait_for("the watches to notice", lambda: metric(
            scrape(ctl)[1], "livepolicy_controller_watch_restarts_total", kind="Pod",
            reason="error") >= 1)
        pod = new_eligible_pod(empty_cluster, "after-the-cut")
        wait_for("the pod created after the cut to be labelled",
                 lambda: pod in labelled(empty_cluster))
        text = scrape(ctl)[1]
        # Resumed from the last resourceVersion: nothing had to be listed again.
        assert metric(text, "livepolicy_controller_relists_total") == lists_before
        assert log.grep("watch-restart") and log.grep("was cut")
        assert ctl.healthz() and all(ok for _, ok, _ in ctl.healthz())
