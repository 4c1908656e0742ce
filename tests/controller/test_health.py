"""/healthz and /readyz of a controller that has not started its loop or watches (no
API server involved): both fail, over real HTTP, saying why; /metrics is served."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from livepolicy.controller.controller import Controller, Options
from livepolicy.controller.logs import EventLog
from livepolicy.kube.client import KubeClient, Target
from tests.controller.support import POLICIES, Lines


@pytest.fixture()
def idle() -> Iterator[Controller]:
    client = KubeClient(None, Target("https://127.0.0.1:1"))  # never called here
    ctl = Controller(client, Options(policies_dir=str(POLICIES), metrics_host="127.0.0.1",
                                     metrics_port=0, stuck_after=60), EventLog(Lines()))
    ctl.server.start()
    yield ctl
    ctl.server.stop()


def get(ctl: Controller, path: str, accept: str = "") -> tuple[int, str, str]:
    host, port = ctl.server.address
    req = urllib.request.Request(f"http://{host}:{port}{path}",
                                 headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status), r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers["Content-Type"], exc.read().decode()


def test_unhealthy_when_the_loop_is_stuck(idle: Controller) -> None:
    idle.heartbeat = time.monotonic() - 120
    status, _, body = get(idle, "/healthz")
    assert status == 503
    assert "[-]loop last turn 120" in body and "[-]watches stopped: Node, Pod" in body
    assert body.endswith("healthz failed\n")


def test_not_ready_before_sync_and_policies(idle: Controller) -> None:
    status, _, body = get(idle, "/readyz")
    assert status == 503
    assert "[-]caches waiting for Node, Pod" in body
    assert "[-]policies none loaded" in body
    idle.turn()  # one turn of the loop loads the policies (nothing is assessed: unsynced)
    assert "[+]policies 2 policies" in get(idle, "/readyz")[2]
    assert idle.assessments == 0


def test_metrics_text_format(idle: Controller) -> None:
    # What Prometheus 2.x asks for, and gets.
    status, ctype, body = get(idle, "/metrics", "text/plain;version=0.0.4;q=0.9,*/*;q=0.1")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert "# TYPE livepolicy_controller_assessment_duration_seconds histogram" in body
    assert "livepolicy_controller_is_leader 0.0" in body
    assert get(idle, "/metrics", "application/openmetrics-text; version=1.0.0")[1] \
        .startswith("application/openmetrics-text")
    assert get(idle, "/other")[0] == 404
