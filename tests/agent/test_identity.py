"""Per-node credentials over real HTTP (issue 11, agent/auth.py).

A node's credential opens only that node's agent; the source of a migration holds only
an upload grant, which opens one route of one migration on the destination while it is
receiving. Every refusal is a 401 from a real agent.
"""

from __future__ import annotations

import http.client
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from livepolicy.agent.auth import TokenReviewer, hex_digest
from livepolicy.agent.client import AgentError
from livepolicy.agent.errors import ApiError
from livepolicy.agent.main import run_agent
from livepolicy.agent.server import ROUTES

from .conftest import Agent, Migration
from .test_bodies import concrete


def status_of(agent: Agent, method: str, path: str, token: str, body: bytes = b"{}") -> int:
    parts = urlsplit(agent.url)
    conn = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_one_nodes_token_opens_no_other_agent(pair: Migration) -> None:
    """Every route of n2 refuses n1's token, and n1's answers it."""
    n1, n2 = pair.src, pair.dst
    assert n1.token != n2.token
    for route in ROUTES:
        path = concrete(route.pattern)
        assert status_of(n2, route.method, path, n1.token) == 401, route
        assert status_of(n1, route.method, path, n1.token) != 401, route


def test_an_upload_grant_opens_one_route_of_one_migration(
        make_agent: Callable[..., Agent]) -> None:
    m = Migration(make_agent("n1"), make_agent("n2"))
    m.create_pod()
    m.prepare()
    m.checkpoint()
    dst = m.dst
    # Before the upload: the grant opens nothing but PUT image of m1.
    for route in ROUTES:
        if route.operation != "putImage":
            assert status_of(dst, route.method, concrete(route.pattern), m.upload) == 401
    assert status_of(dst, "PUT", "/v1/migrations/m2/image", m.upload, b"x") == 401
    assert status_of(m.src, "PUT", "/v1/migrations/m1/image", m.upload, b"x") == 401
    # A wrong grant is refused by the destination; the source says so.
    with pytest.raises(AgentError) as err:
        m.src.client.transfer(m.mid, destination=dst.url, token=secrets.token_urlsafe(32))
    assert err.value.code == "peer_error" and "401" in err.value.message
    sent = m.transfer()  # the source uploads with the grant alone
    assert sent["bytes"] > 0
    assert dst.client.status(m.mid)["phase"] == "received"
    # Once the destination is done (rolled back here), the grant opens nothing at all.
    dst.client.rollback(m.mid)
    m.src.client.rollback(m.mid)
    assert status_of(dst, "PUT", "/v1/migrations/m1/image", m.upload, b"x") == 401


def test_prepare_takes_a_grant_only_for_the_destination(pair: Migration) -> None:
    pair.create_pod()
    common: dict[str, Any] = {"pod": pair.pod, "uid": pair.uid, "memory_bytes": 1,
                              "key": pair.key, "peer": pair.dst.url}
    with pytest.raises(AgentError) as err:
        pair.src.client.prepare("m1", role="source", upload_token_sha256=hex_digest("x"),
                                **common)
    assert err.value.status == 400 and "destination" in err.value.message
    with pytest.raises(AgentError) as err:
        pair.dst.client.prepare("m1", role="destination", upload_token_sha256="ABC", **common)
    assert err.value.status == 400 and "64 lowercase hex" in err.value.message


class _Api:
    """The API server's TokenReview answer, or its failure; counts the calls."""

    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer, self.calls = answer, 0

    def request(self, method: str, path: str, *, body: Any = None) -> Any:
        self.calls += 1
        assert (method, path) == ("POST", "/apis/authentication.k8s.io/v1/tokenreviews")
        assert body["spec"]["audiences"] == ["livepolicy.io/agent/n1"]
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
APPLY = "system:serviceaccount:livepolicy:lp-livepolicy-apply"


def _review(user: str, audiences: list[str], authenticated: bool = True) -> dict[str, Any]:
    return {"status": {"authenticated": authenticated, "audiences": audiences,
                       "user": {"username": user}}}


@pytest.mark.parametrize("answer,ok", [
    (_review(APPLY, ["livepolicy.io/agent/n1"]), True),
    (_review(APPLY, ["livepolicy.io/agent/n2"]), False),  # another node's token
    (_review("system:serviceaccount:livepolicy:other", ["livepolicy.io/agent/n1"]), False),
    (_review(APPLY, ["livepolicy.io/agent/n1"], authenticated=False), False),
    ({"status": {}}, False),
])
def test_token_review_accepts_only_the_allowed_user_with_this_nodes_audience(
        answer: dict[str, Any], ok: bool) -> None:
    api = _Api(answer)
    review = TokenReviewer(api, "livepolicy.io/agent/n1", frozenset({APPLY}))
    assert review(JWT) is ok
    assert review(JWT) is ok and api.calls == 1  # cached: one review per token
    assert review("not-a-jwt") is False and api.calls == 1  # never sent to the API


def test_token_review_that_cannot_ask_is_a_503_never_a_yes() -> None:
    review = TokenReviewer(_Api(OSError("connection refused")), "livepolicy.io/agent/n1",
                           frozenset({APPLY}))
    with pytest.raises(ApiError) as err:
        review(JWT)
    assert err.value.status == 503 and err.value.code == "auth_unavailable"


def test_an_agent_that_cannot_reach_the_api_says_so(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--auth-allow without a usable kubeconfig: a one-line error and status 1."""
    status = run_agent(["--node", "n1", "--state-dir", str(tmp_path), "--port", "0",
                        "--auth-allow", APPLY, "--kubeconfig", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("livepolicy agent: --auth-allow needs the "
                                          "Kubernetes API"), err
    assert "Traceback" not in err
