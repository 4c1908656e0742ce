"""Malformed request bodies and framing over real HTTP: always a 4xx at once, never a 5xx.

Regressions for issue 11: a deeply nested JSON body was a 500 (RecursionError in the
decoder) and a Content-Length with a leading space was taken as valid, so the agent waited
for a body that never came.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from livepolicy.agent.server import MAX_JSON_DEPTH, ROUTES, json_depth_exceeds

from .conftest import Agent

JSON_ROUTES = [r for r in ROUTES if r.body == "json"]


def concrete(pattern: str) -> str:
    return (pattern.replace("{mid}", "m1").replace("{namespace}", "default")
            .replace("{name}", "web"))


def exchange(agent: Agent, head: bytes, body: bytes = b"", timeout: float = 5.0
             ) -> tuple[int, dict[str, Any], float]:
    """Send raw bytes, read the whole answer; status, JSON body and seconds taken."""
    url = urlsplit(agent.url)
    start = time.monotonic()
    with socket.create_connection((str(url.hostname), int(url.port or 0)), timeout=timeout) as c:
        c.sendall(head + b"\r\n" + body)
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    elapsed = time.monotonic() - start
    status_line, _, rest = data.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload), elapsed


def head(agent: Agent, method: str, path: str, *lines: str) -> bytes:
    out = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
           f"Authorization: Bearer {agent.token}", *lines]
    return "".join(line + "\r\n" for line in out).encode("latin-1")


def post(agent: Agent, route: Any, body: bytes, ctype: str = "application/json"
         ) -> tuple[int, dict[str, Any], float]:
    h = head(agent, route.method, concrete(route.pattern), f"Content-Type: {ctype}",
             f"Content-Length: {len(body)}")
    return exchange(agent, h, body)


DEEP = {
    "array": b"[" * 100_000,
    "object": b'{"a":' * 100_000,
    "closed-array": b"[" * 5_000 + b"]" * 5_000,
    "closed-object": b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    "inside-object": b'{"uid": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
}


@pytest.mark.parametrize("route", JSON_ROUTES, ids=lambda r: f"{r.method} {r.pattern}")
@pytest.mark.parametrize("kind", sorted(DEEP))
def test_deeply_nested_json_is_400(shared_agent: Agent, route: Any, kind: str) -> None:
    status, body, elapsed = post(shared_agent, route, DEEP[kind])
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    assert f"deeper than {MAX_JSON_DEPTH} levels" in body["error"]["message"]
    assert elapsed < 2


def test_nesting_at_the_limit_is_parsed(shared_agent: Agent) -> None:
    ok = b'{"uid": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    route = next(r for r in ROUTES if r.operation == "putPod")
    status, body, _ = post(shared_agent, route, ok)
    assert status == 400 and body["error"]["code"] == "invalid_identifier"  # the uid, not JSON
    assert not json_depth_exceeds(ok)
    assert json_depth_exceeds(b"[" * (MAX_JSON_DEPTH + 1))
    assert not json_depth_exceeds(b'{"a": "' + b"[" * 1000 + b'"}')  # brackets in a string
    assert not json_depth_exceeds(b'["\\"' + b"[" * 1000 + b'"]')  # escaped quote


@pytest.mark.parametrize("body,fragment", [
    (b'{"uid": "\xff"}', "not valid UTF-8"),
    (b"\xfe\xff\x00{", "not valid UTF-8"),
    (b"{", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"uid": 1e999999}', ""),
    (b"NaN", "must be a JSON object"),
])
def test_bad_json_bodies_are_400(shared_agent: Agent, body: bytes, fragment: str) -> None:
    route = next(r for r in ROUTES if r.operation == "prepare")
    status, answer, _ = post(shared_agent, route, body)
    assert 400 <= status < 500, answer
    assert fragment in answer["error"]["message"]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x"])
def test_wrong_content_type_is_415(shared_agent: Agent, ctype: str) -> None:
    route = next(r for r in ROUTES if r.operation == "addFault")
    status, body, _ = post(shared_agent, route, b"{}", ctype)
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
    status, body, _ = post(shared_agent, route, b"{}", "application/json; charset=utf-8")
    assert status == 400 and body["error"]["code"] == "bad_request"  # reached the service


BAD_LENGTHS = [" 2", "  2", "2 ", "\t2", "+2", "-2", "0x2", "2, 2", "", "   ", "²",
               "9" * 19, "1e3", " 200"]


@pytest.mark.parametrize("value", BAD_LENGTHS, ids=repr)
def test_malformed_content_length_is_400_at_once(shared_agent: Agent, value: str) -> None:
    # The header line is "Content-Length: <value>", so " 2" has two spaces after the colon.
    h = head(shared_agent, "POST", "/v1/migrations/m1/prepare", "Content-Type: application/json",
             f"Content-Length: {value}")
    status, body, elapsed = exchange(shared_agent, h, b"{}")
    assert (status, body["error"]["code"]) == (400, "bad_request")
    assert "Content-Length" in body["error"]["message"]
    assert elapsed < 1


def test_folded_and_repeated_content_length_are_400(shared_agent: Agent) -> None:
    for lines in (["Content-Length:", " 2"], ["Content-Length: 2", "Content-Length: 2"],
                  ["Content-Length: 2", "content-length: 3"]):
        h = head(shared_agent, "POST", "/v1/migrations/m1/prepare", *lines)
        status, body, elapsed = exchange(shared_agent, h, b"{}")
        assert (status, body["error"]["code"]) == (400, "bad_request"), lines
        assert elapsed < 1


def test_canonical_lengths_are_accepted(shared_agent: Agent) -> None:
    for line in ("Content-Length: 2", "Content-Length:2", "content-length: 2"):
        h = head(shared_agent, "POST", "/v1/faults", "Content-Type: application/json", line)
        status, body, _ = exchange(shared_agent, h, b"{}")
        assert status == 400 and "phase" in body["error"]["message"], line  # the service


def test_chunked_missing_and_huge_lengths(shared_agent: Agent) -> None:
    agent = shared_agent
    h = head(agent, "POST", "/v1/migrations/m1/prepare", "Transfer-Encoding: chunked")
    status, body, elapsed = exchange(agent, h, b"2\r\n{}\r\n0\r\n\r\n")
    assert (status, body["error"]["code"]) == (411, "length_required") and elapsed < 3
    # No Content-Length: the body is empty, the service says what is missing.
    status, body, elapsed = exchange(agent, head(agent, "POST", "/v1/migrations/m1/prepare"))
    assert (status, body["error"]["code"]) == (400, "bad_request") and elapsed < 1
    # Bigger than max_json_bytes, or than int64: refused from the headers.
    for value in ("999999999999999999", str(2 << 20)):
        h = head(agent, "POST", "/v1/migrations/m1/prepare", f"Content-Length: {value}")
        status, body, elapsed = exchange(agent, h, b"{}")
        assert (status, body["error"]["code"]) == (413, "too_large") and elapsed < 3
    h = head(agent, "PUT", "/v1/migrations/m1/image")
    status, body, _ = exchange(agent, h, b"")
    assert (status, body["error"]["code"]) == (411, "length_required")
