"""Authentication, input bounds, identifier validation and image confidentiality."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from livepolicy.agent import AgentError, new_key
from livepolicy.agent.crypto import decode_key
from livepolicy.agent.server import ROUTES

from .conftest import Agent, Migration, image_files, mode


def raw(agent: Agent, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    url = urlsplit(agent.url)
    conn = http.client.HTTPConnection(str(url.hostname), url.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(data) if data else {}


def concrete(pattern: str) -> str:
    return (pattern.replace("{mid}", "m1").replace("{namespace}", "default")
            .replace("{name}", "web"))


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.pattern}")
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-0123456789", "Basic dXNlcjpwYXNz",
                                  "Bearer", "bearer  ", "Bearer {token}x", "Bearer x{token}"])
def test_every_endpoint_needs_the_token(shared_agent: Agent, route: Any, auth: str | None) -> None:
    agent = shared_agent
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth.format(token=agent.token)
    def pods() -> list[tuple[str, str]]:
        return [(p["name"], p["state"]) for p in agent.client.list_pods()["pods"]]

    before = pods()
    status, body = raw(agent, route.method, concrete(route.pattern), b"{}", headers)
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    assert pods() == before
    assert agent.client.list_migrations() == {"migrations": []}


def test_token_in_other_scheme_is_refused(shared_agent: Agent) -> None:
    agent = shared_agent
    status, _ = raw(agent, "GET", "/v1/health", headers={"Authorization": f"Basic {agent.token}"})
    assert status == 401
    status, _ = raw(agent, "GET", "/v1/health", headers={"Authorization": f"Bearer {agent.token}"})
    assert status == 200


def test_unknown_routes_and_methods(shared_agent: Agent) -> None:
    agent = shared_agent
    auth = {"Authorization": f"Bearer {agent.token}"}
    assert raw(agent, "GET", "/v1/nope", headers=auth)[0] == 404
    status, body = raw(agent, "DELETE", "/v1/health", headers=auth)
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert raw(agent, "GET", "/v1/nope")[0] == 401  # auth before routing


@pytest.mark.parametrize("mid", ["..%2Fx", "..", "%2E%2E", "M1", "a_b", "-a", "a-", "a" * 64,
                                 "a%0A", "a%00", "%C3%A9", "a.b", "%FF"])
def test_bad_migration_ids_are_rejected(shared_agent: Agent, mid: str) -> None:
    agent = shared_agent
    auth = {"Authorization": f"Bearer {agent.token}"}
    for method, suffix in (("GET", ""), ("POST", "/prepare"), ("POST", "/cleanup"),
                           ("PUT", "/image")):
        status, body = raw(agent, method, f"/v1/migrations/{mid}{suffix}", b"{}", auth)
        assert status == 400, (method, suffix, body)
        assert body["error"]["code"] == "invalid_identifier"
    assert not any((agent.state_dir / "images").iterdir())


def test_unencoded_traversal_never_reaches_a_handler(shared_agent: Agent) -> None:
    agent = shared_agent
    auth = {"Authorization": f"Bearer {agent.token}"}
    status, _ = raw(agent, "POST", "/v1/migrations/../x/cleanup", b"{}", auth)
    assert status in (400, 404)


@pytest.mark.parametrize("field,value", [
    ("pod", "../web"), ("pod", "default/../../etc"), ("pod", "web"), ("pod", "Default/web"),
    ("uid", "../u"), ("uid", ""), ("key", "c2hvcnQ="), ("key", "not base64!"), ("role", "both"),
    ("peer", "file:///etc/passwd"), ("peer", "http://user:pw@host:1"), ("memory_bytes", -1),
])
def test_bad_prepare_bodies_are_rejected(shared_agent: Agent, field: str, value: object) -> None:
    client = shared_agent.client
    body: dict[str, object] = {"role": "source", "pod": "default/web", "uid": "uid-web",
                               "memory_bytes": 1, "key": new_key(), "peer": "http://127.0.0.1:9"}
    body[field] = value
    with pytest.raises(AgentError) as err:
        client.request("POST", "/v1/migrations/m1/prepare", body)
    assert err.value.status == 400
    assert client.list_migrations() == {"migrations": []}


def test_bad_pod_path_identifiers(shared_agent: Agent) -> None:
    c = shared_agent.client
    for ns, name in (("..", "x"), ("default", "..%2Fx"), ("default", "a..b"), ("A", "x"),
                     ("default", "x" * 254)):
        with pytest.raises(AgentError) as err:
            c.request("PUT", f"/v1/pods/{ns}/{name}", {"uid": "u", "memory_bytes": 1})
        assert err.value.status == 400, (ns, name)


def test_json_body_limit(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent(max_json_bytes=4096)
    big = {"uid": "u", "memory_bytes": 1, "pad": "x" * 5000}
    with pytest.raises(AgentError) as err:
        agent.client.request("PUT", "/v1/pods/default/web", big)
    assert err.value.status == 413 and err.value.code == "too_large"
    assert agent.client.list_pods() == {"pods": []}
    status, body = raw(agent, "POST", "/v1/faults", b"[1]",
                       {"Authorization": f"Bearer {agent.token}"})
    assert status == 400 and body["error"]["code"] == "invalid_json"


def _headers_only(agent: Agent, head: str) -> tuple[int, dict[str, Any]]:
    """Send only a request head announcing a body, and read the answer."""
    url = urlsplit(agent.url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as s:
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), json.loads(body)


def test_oversized_image_refused_before_reading(pair: Migration) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    limit = m.dst.client.capabilities()["max_image_bytes"]
    status, body = _headers_only(m.dst, (
        f"PUT /v1/migrations/{m.mid}/image HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {m.dst.token}\r\nContent-Length: {limit + 1}\r\n\r\n"))
    assert status == 413 and body["error"]["code"] == "too_large"
    status, body = _headers_only(m.dst, (
        f"PUT /v1/migrations/{m.mid}/image HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {m.dst.token}\r\nTransfer-Encoding: chunked\r\n\r\n"))
    assert status == 411
    # unauthenticated huge uploads are refused from the headers alone
    status, _ = _headers_only(m.dst, (
        f"PUT /v1/migrations/{m.mid}/image HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {10 * limit}\r\n\r\n"))
    assert status == 401
    assert image_files(m.dst) == []


def test_transfer_to_small_destination_is_refused(make_agent: Callable[..., Agent]) -> None:
    m = Migration(make_agent("n1"), make_agent("n2", max_image_bytes=64 * 1024))
    m.create_pod()
    m.prepare()
    m.checkpoint()
    with pytest.raises(AgentError) as err:
        m.transfer()
    assert err.value.status == 502 and err.value.code == "peer_error"
    assert "413" in err.value.message
    assert image_files(m.dst) == []


def test_truncated_upload_leaves_no_image(pair: Migration) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    url = urlsplit(m.dst.url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as s:
        s.sendall((f"PUT /v1/migrations/{m.mid}/image HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {m.dst.token}\r\nContent-Length: 100000\r\n\r\n"
                   ).encode() + b"x" * 1000)
        s.shutdown(socket.SHUT_WR)
        answer = s.recv(65536)
    assert b" 400 " in answer.split(b"\r\n")[0]
    assert image_files(m.dst) == []
    assert m.dst.client.status(m.mid)["phase"] == "prepared"


def test_images_are_owner_only_encrypted_and_deleted(pair: Migration) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    m.checkpoint()
    m.transfer()
    for agent in (m.src, m.dst):
        (image,) = image_files(agent)
        assert mode(image) == 0o600
        assert mode(image.parent) == 0o700 and mode(image.parent.parent) == 0o700
        assert image.parent == agent.state_dir / "images" / m.mid
        data = image.read_bytes()
        assert data.startswith(b"LPIMG\x01")
        for plain in (b"livepolicy-sim", b"uid-web", b"counter", b"default", b"memory_bytes"):
            assert plain not in data
    for path in (m.src.state_dir / "migrations" / f"{m.mid}.json",
                 m.src.state_dir / "sim-state.json"):
        assert mode(path) == 0o600
        assert m.key not in path.read_text()  # the key is never written to disk
    m.dst.client.restore(m.mid)
    m.dst.client.verify(m.mid)
    m.src.client.commit(m.mid)
    assert image_files(m.src) == []
    m.dst.client.commit(m.mid)
    assert image_files(m.dst) == []


def test_tampered_image_is_refused(pair: Migration) -> None:
    m = pair
    m.create_pod()
    m.prepare()
    m.checkpoint()
    m.transfer()
    (image,) = image_files(m.dst)
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 1
    image.write_bytes(bytes(data))
    with pytest.raises(AgentError) as err:
        m.dst.client.restore(m.mid)
    assert err.value.status == 422 and err.value.code == "image_corrupt"
    assert m.pods(m.dst) == []
    assert m.dst.client.status(m.mid)["phase"] == "received"


def test_image_of_another_migration_does_not_decrypt(make_agent: Callable[..., Agent]) -> None:
    """Images are bound to their migration id and pod: replaying one under another id fails."""
    src, dst = make_agent("n1"), make_agent("n2")
    m1 = Migration(src, dst, mid="m1")
    m1.create_pod()
    m1.prepare()
    m1.checkpoint()
    m1.transfer()
    m2 = Migration(src, dst, mid="m2", pod="default/other", uid="uid-other", key=m1.key)
    m2.create_pod()
    m2.prepare()
    (image,) = image_files(dst)
    # upload m1's image as m2's (same key!): the image is bound to m1 and its pod
    url = urlsplit(dst.url)
    conn = http.client.HTTPConnection(str(url.hostname), url.port, timeout=5)
    conn.request("PUT", "/v1/migrations/m2/image", body=image.read_bytes(),
                 headers={"Authorization": f"Bearer {dst.token}"})
    assert conn.getresponse().status == 200
    conn.close()
    with pytest.raises(AgentError) as err:
        dst.client.restore("m2")
    assert err.value.code == "image_corrupt"


def test_key_must_be_32_bytes() -> None:
    assert len(decode_key("A" * 43 + "=")) == 32
    for bad in ("", "AAAA", "A" * 44 + "AAAA", 42):
        with pytest.raises(ValueError):
            decode_key(bad)


def test_token_is_not_in_repr(make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    agent = make_agent()
    assert agent.server is not None
    assert agent.token not in repr(agent.server.config)
