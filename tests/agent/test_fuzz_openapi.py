"""Property-based fuzz of a real agent over loopback HTTP, driven by its OpenAPI document.

Every path and method of livepolicy/agent/openapi.yaml gets requests whose path
parameters, headers and bodies are drawn from the document's own schemas ($refs resolved):
valid-shaped bodies and mutated ones (wrong types, extra and missing fields, huge strings,
deep nesting, bytes that are not JSON, a wrong Content-Type, chunked or length-less
framing), mostly with this node's token and sometimes with none or a wrong one. Whatever
comes in, the agent must answer at once (socket timeouts), never with a 5xx the document
does not promise for that operation, only with statuses the document lists for it, and
with bodies that match the schema it gives for them (jsonschema). A mismatch is fixed where
it is wrong: the server when it misbehaves, the document when it forgot what the server
rightly answers.

Hypothesis is derandomized and keeps no database, so CI runs the same examples every time.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes, urlsplit

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

import livepolicy.agent
from livepolicy.agent import AgentClient, AgentError, new_key
from livepolicy.agent.auth import hex_digest
from livepolicy.agent.config import DEFAULT_MAX_JSON_BYTES
from livepolicy.agent.server import MAX_JSON_DEPTH, AgentServer

from .conftest import Agent, _config

Json = dict[str, Any]
SPEC_PATH = Path(livepolicy.agent.__file__).parent / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch")
TIMEOUT = 10.0  # seconds: the agent answers bad input at once, this only bounds a hang
MAX_JSON = DEFAULT_MAX_JSON_BYTES
REFUSED = ("http://127.0.0.1:1", "https://127.0.0.1:1", "http://[::1]:1", "http://localhost:1")
UPLOAD = "upload-token-" + "x" * 24  # the grant of migration dst-prep (sha256 at prepare)

# Migration ids the fixture puts in known phases, so that fuzzed steps get past the
# "unknown migration" check and into the state machine.
MIDS = ("src-prep", "src-frozen", "dst-prep", "m1")
EXAMPLES = 40  # per parametrized run: (19 + 12 + 1) x 40 = 1280 requests, ~8 s
EXITS: list[int] = []  # crash faults of the fuzz agent land here instead of os._exit


@functools.cache
def spec() -> Json:
    data: Json = YAML(typ="safe").load(SPEC_PATH.read_text())
    return data


def resolve(node: Any) -> Any:
    """`node` with every local $ref replaced by what it points to (the spec has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec()
            for part in str(node["$ref"]).removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target)
        return {k: resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v) for v in node]
    return node


@dataclass(frozen=True)
class Operation:
    """One path + method of the document, resolved."""

    op_id: str
    method: str
    path: str
    params: dict[str, Json] = field(repr=False)  # path parameters: name -> schema
    headers: dict[str, Json] = field(repr=False)  # header parameters: name -> schema
    media: str | None = field(repr=False)  # request body media type
    body: Json | None = field(repr=False)  # its schema
    responses: dict[str, Json] = field(repr=False)

    def documented(self, status: int) -> Json | None:
        return self.responses.get(str(status))


def operations() -> list[Operation]:
    out = []
    for path, item in spec()["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            params = [resolve(p) for p in item.get("parameters", []) + op.get("parameters", [])]
            content = resolve(op.get("requestBody", {})).get("content", {})
            media = next(iter(content), None)
            out.append(Operation(
                op_id=op["operationId"], method=method.upper(), path=path,
                params={p["name"]: p["schema"] for p in params if p["in"] == "path"},
                headers={p["name"]: p["schema"] for p in params if p["in"] == "header"},
                media=media, body=content[media]["schema"] if media else None,
                responses=resolve(op["responses"]),
            ))
    return out


OPERATIONS = operations()
BY_ID = {op.op_id: op for op in OPERATIONS}


# -- schema -> strategy -------------------------------------------------------------------
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=20)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                    max_size=3),
    max_leaves=8)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


def _b64_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _pem(body: str) -> str:
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


# Values for fields whose meaning the schemas give only in prose (a base64 key, a pod
# that exists here), mixed in so valid-shaped bodies also get past the first checks.
HINTS: dict[str, st.SearchStrategy[Any]] = {
    "key": st.binary(min_size=32, max_size=32).map(_b64_key) | st.binary(max_size=40).map(
        _b64_key),
    "pod": st.sampled_from(["default/web", "default/frozen", "default/incoming", "a/b/c", "/"]),
    "uid": st.sampled_from(["uid-web", "uid-frozen", "uid-incoming"]),
    "mid": st.sampled_from(MIDS),
    "namespace": st.just("default"),
    "name": st.sampled_from(["web", "frozen", "..", "a..b"]),
    "destination_certificate": st.text(max_size=60).map(_pem),
    "upload_token_sha256": st.just(hex_digest(UPLOAD)),
    "token": st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                     max_size=40),
}


def from_schema(schema: Json, name: str | None = None, hinted: bool = False
                ) -> st.SearchStrategy[Any]:
    """Values of a (resolved) JSON Schema, as far as this document uses the keywords;
    `hinted`: mostly the HINTS where there are some, to get deeper into the service."""
    base = _from_schema(schema, hinted)
    if name not in HINTS:
        return base
    hint = HINTS[name]
    return st.integers(0, 3 if hinted else 1).flatmap(lambda i: hint if i else base)


def _from_schema(schema: Json, hinted: bool = False) -> st.SearchStrategy[Any]:
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([_from_schema({**schema, "type": k}) for k in kind])
    if kind == "string":
        if schema.get("format") == "uri":
            return st.sampled_from(REFUSED) | st.text(max_size=30)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(max_size=min(int(schema.get("maxLength", 64)), 64))
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**53)), schema.get("maximum", 2**53))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False,
                         allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(_from_schema(schema.get("items", {})), max_size=3)
    if kind == "object":
        props: Json = schema.get("properties", {})
        if not props:
            return st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, k, hinted) for k, v in props.items() if k in required},
            optional={k: from_schema(v, k, hinted) for k, v in props.items()
                      if k not in required})
    return JSON_VALUES


def deep(depth: int, opener: str = "[") -> str:
    closer = "]" if opener == "[" else "}"
    inner = '{"a":' if opener == "{" else "["
    return inner * depth + "1" * (opener == "{") + closer * depth


@st.composite
def mutated(draw: st.DrawFn, schema: Json) -> str:
    """A valid-shaped object with one thing wrong, as JSON text."""
    obj = draw(from_schema(schema))
    props = sorted(schema.get("properties", {})) or ["x"]
    how = draw(st.sampled_from(["wrong_type", "extra", "missing", "huge", "deep", "null"]))
    target = draw(st.sampled_from(props))
    if how == "wrong_type":
        obj[target] = draw(JSON_VALUES)
    elif how == "extra":
        obj.update(draw(st.dictionaries(st.text(max_size=12), JSON_VALUES, min_size=1,
                                        max_size=4)))
    elif how == "missing":
        required = schema.get("required") or props
        obj.pop(draw(st.sampled_from(required)), None)
    elif how == "huge":
        obj[target] = "x" * draw(st.sampled_from([5_000, 100_000, MAX_JSON - 200]))
    elif how == "null":
        obj[target] = None
    text = json.dumps(obj)
    if how == "deep":
        depth = draw(st.sampled_from([MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1,
                                      500, 20_000]))
        nested = deep(depth, draw(st.sampled_from("[{")))
        text = text[:-1] + (", " if len(text) > 2 else "") + f'"{target}": {nested}' + "}"
    return text


@dataclass(frozen=True)
class Call:
    """One request: `auth` is a header template ("{token}" is this node's token)."""

    op: Operation
    path: str
    auth: str | None
    headers: tuple[tuple[str, str], ...]
    body: bytes
    framing: str  # "length", "none" (no Content-Length, no body), "chunked", "malformed"
    expect: frozenset[int] = frozenset()  # when not empty: the statuses that may come back

    @property
    def authorized(self) -> bool:
        return self.auth in ("Bearer {token}", "bearer {token}")


VALID_AUTH = st.sampled_from(["Bearer {token}", "bearer {token}"])
BAD_AUTH = st.sampled_from([
    "Bearer {token}x", "Bearer x{token}", "Basic {token}", "Bearer", "Bearer ", "{token}",
]) | HEADER_TEXT.filter(lambda s: "{" not in s).map(lambda s: "Bearer " + s) | st.none()


@st.composite
def path_params(draw: st.DrawFn, op: Operation, known: bool = False) -> str:
    """The path with its parameters filled in: from their schemas, hints, or garbage."""
    path = op.path
    for name, schema in op.params.items():
        how = "hint" if known else draw(st.sampled_from(
            ["schema", "schema", "hint", "garbage", "bytes"]))
        if how == "schema":
            value = quote(draw(from_schema(schema)), safe="")
        elif how == "hint":
            value = quote(draw(HINTS[name]), safe="")
        elif how == "garbage":  # any text, percent-encoded: dots, slashes, capitals...
            value = quote(draw(st.text(min_size=1, max_size=300)), safe="")
        else:  # any bytes: "%FF" is not UTF-8
            value = quote_from_bytes(draw(st.binary(min_size=1, max_size=80)), safe="")
        path = path.replace("{" + name + "}", value)
    return path


@st.composite
def json_body(draw: st.DrawFn, op: Operation, hinted: bool = False
              ) -> tuple[bytes, str | None, frozenset[int]]:
    """A body, its Content-Type (None: no header) and, when certain, the expected statuses;
    `hinted`: mostly valid-shaped ones."""
    schema = op.body or {"type": "object"}
    how = draw(st.sampled_from(["valid"] * (24 if hinted else 4) + ["mutated"] * 3 + [
        "not_object", "not_json", "deep", "too_large", "wrong_type", "empty"]))
    ctype = draw(st.sampled_from(["application/json", "application/json; charset=utf-8",
                                  "Application/JSON", None]))
    if how == "valid":
        return json.dumps(draw(from_schema(schema, hinted=hinted))).encode(), ctype, frozenset()
    if how == "mutated":
        return draw(mutated(schema)).encode(), ctype, frozenset()
    if how == "not_object":
        value = draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
        return json.dumps(value).encode(), ctype, frozenset({400})
    if how == "not_json":
        raw = draw(st.binary(min_size=1, max_size=200).filter(_not_json))
        return raw, ctype, frozenset({400})
    if how == "deep":
        raw = deep(draw(st.sampled_from([MAX_JSON_DEPTH + 1, 1000, 100_000])),
                   draw(st.sampled_from("[{"))).encode()
        return raw, ctype, frozenset({400})
    if how == "too_large":
        raw = json.dumps({"x": "y" * (MAX_JSON + draw(st.integers(1, 1000)))}).encode()
        return raw, ctype, frozenset({413})
    if how == "wrong_type":
        other = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded",
                                      "application/octet-stream", "multipart/form-data; b=x",
                                      "json", "application/jsonx"]))
        return json.dumps(draw(from_schema(schema))).encode(), other, frozenset({415})
    return draw(st.sampled_from([b"", b" ", b"\r\n\t"])), ctype, frozenset()


def _not_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return bool(raw.strip())
    return False


@st.composite
def calls(draw: st.DrawFn, op: Operation, auth: st.SearchStrategy[str | None] = VALID_AUTH,
          known: bool = False) -> Call:
    """A request for `op`, mostly well formed, always something the agent must survive;
    `known`: on one of the migrations (MIDS) the fixture set up."""
    path = draw(path_params(op, known))
    headers: list[tuple[str, str]] = []
    expect: frozenset[int] = frozenset()
    if op.media == "application/octet-stream":
        body = draw(st.binary(max_size=4096))
        headers.append(("Content-Type", draw(st.sampled_from(
            ["application/octet-stream", "application/json", "text/plain"]))))
        for name in op.headers:
            sha = draw(st.sampled_from(["none", "right", "wrong", "text"]))
            if sha != "none":
                value = {"right": hashlib.sha256(body).hexdigest(),
                         "wrong": draw(st.binary(min_size=32, max_size=32)).hex(),
                         }.get(sha) or draw(HEADER_TEXT)
                headers.append((name, value))
    elif op.media is not None or draw(st.integers(0, 3)) == 0:
        # Operations without a documented body get one now and then: it must not matter.
        body, ctype, expect = draw(json_body(op, hinted=known))
        if ctype is not None:
            headers.append(("Content-Type", ctype))
        if op.media is None and expect != {413}:
            expect = frozenset()  # a GET ignores the body it may carry, but not its size
    else:
        body = b""
    framing = draw(st.sampled_from(["length"] * (48 if known else 12) +
                                   ["none", "chunked", "malformed"]))
    if framing == "chunked":
        expect = frozenset({411})  # refused from the headers, before the path is looked at
    elif framing == "malformed":
        expect, body = frozenset({400}), b"{}"
    elif framing == "none":
        expect = frozenset({411}) if op.media == "application/octet-stream" else frozenset()
        body = b""
    if expect and op.params and framing != "chunked":
        expect = expect | {400}  # path identifiers are checked before the body
    return Call(op, path, draw(auth), tuple(headers), body, framing, expect)


# -- the wire -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def encode(call: Call, token: str) -> bytes:
    lines = [f"{call.op.method} {call.path} HTTP/1.1", "Host: 127.0.0.1"]
    if call.auth is not None:
        lines.append("Authorization: " + call.auth.replace("{token}", token))
    lines += [f"{k}: {v}" for k, v in call.headers]
    body = call.body
    if call.framing == "length":
        lines.append(f"Content-Length: {len(body)}")
    elif call.framing == "malformed":  # what http.client would strip, the agent refuses
        lines.append(f"Content-Length:  {len(body)}")
    elif call.framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        body = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    return "".join(line + "\r\n" for line in lines).encode("latin-1") + b"\r\n" + body


def exchange(agent: Agent, raw: bytes) -> Response:
    """Send one request, read the answer to the end (the agent closes every connection)."""
    url = urlsplit(agent.url)
    with socket.create_connection((str(url.hostname), int(url.port or 0)),
                                  timeout=TIMEOUT) as conn:
        # It may answer before reading everything: the answer says why.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(raw)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body), status_line
    return Response(int(status_line.split()[1]), headers, body)


def send(agent: Agent, call: Call) -> Response:
    return exchange(agent, encode(call, agent.token))


def check(call: Call, resp: Response) -> None:
    """The answer is one the document promises for this operation, in the shape it gives."""
    op, status = call.op, resp.status
    where = f"{op.method} {call.path} -> {status}: {resp.body[:300]!r}"
    doc = op.documented(status)
    assert doc is not None, f"undocumented status: {where}"
    body: Any = None
    if resp.headers.get("content-type") == "application/json":
        body = json.loads(resp.body)
    if status >= 500:
        # 503 is promised (auth_unavailable, shutting_down); a transfer may relay that
        # the destination it was given refused or was unreachable. Nothing else.
        peer = op.op_id == "transfer" and status == 502 and body["error"]["code"] in (
            "peer_error", "peer_unreachable")
        assert status == 503 or peer, f"server error: {where}"
    if call.expect and call.authorized:
        assert status in call.expect, f"expected {sorted(call.expect)}: {where}"
    content = doc.get("content", {})
    ctype = resp.headers.get("content-type")
    assert ctype in content, f"Content-Type {ctype} not documented: {where}"
    schema = content[ctype].get("schema", {})
    if ctype == "application/json":
        jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    else:
        assert schema.get("type") == "string"
        resp.body.decode("utf-8")
    if status == 401:
        assert "www-authenticate" in resp.headers, where


# -- the agent ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """An agent of its own: fuzzing changes its state. Crash faults only land in a list,
    and a short peer timeout bounds a transfer to a fuzzed destination."""
    config = _config("fuzz", tmp_path_factory.mktemp("fuzz"), peer_timeout=3.0)
    server = AgentServer(config, poll_interval=0.01, exit_hook=EXITS.append)
    server.start()
    agent = Agent("fuzz", server.url, config.token, config.state_dir,
                  AgentClient(server.url, config.token, timeout=TIMEOUT), server=server)
    setup_migrations(agent)
    yield agent
    server.stop()


def setup_migrations(agent: Agent) -> None:
    """Pods and migrations in known phases (the MIDS), for fuzzed steps to act on."""
    c = agent.client
    c.put_pod("default", "web", "uid-web", 1024)
    c.put_pod("default", "frozen", "uid-frozen", 4096)
    key = new_key()
    c.prepare("src-prep", role="source", pod="default/web", uid="uid-web", memory_bytes=1024,
              key=key, peer=REFUSED[0])
    c.prepare("src-frozen", role="source", pod="default/frozen", uid="uid-frozen",
              memory_bytes=4096, key=key, peer=REFUSED[1])  # https: the TLS set-up runs
    c.checkpoint("src-frozen", round=0, final=True)
    c.prepare("dst-prep", role="destination", pod="default/incoming", uid="uid-incoming",
              memory_bytes=1024, key=key, peer=REFUSED[0], upload_token_sha256=hex_digest(UPLOAD))


def after(agent: Agent, call: Call, resp: Response) -> None:
    """Disarm what a fuzzed POST /v1/faults armed: a hang would stall later examples for up
    to a day, a crash would end the agent."""
    if call.op.op_id == "addFault" and resp.status == 200:
        agent.client.clear_faults()


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# -- the tests ----------------------------------------------------------------------------
def test_every_documented_operation_is_fuzzed() -> None:
    """The fuzz covers the whole document, not a list kept by hand."""
    assert len(OPERATIONS) == sum(
        m in item for item in spec()["paths"].values() for m in METHODS)
    for op in OPERATIONS:
        assert "401" in op.responses
        calls(op).validate()  # every operation's schemas turn into strategies


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.op_id)
@FUZZ
@given(data=st.data())
def test_fuzzed_requests_get_documented_answers(fuzz_agent: Agent, op: Operation,
                                                data: st.DataObject) -> None:
    """With this node's token: a documented status and body, never an undocumented 5xx."""
    call = data.draw(calls(op))
    resp = send(fuzz_agent, call)
    after(fuzz_agent, call, resp)
    check(call, resp)


@pytest.mark.parametrize("op", [op for op in OPERATIONS if "mid" in op.params],
                         ids=lambda op: op.op_id)
@FUZZ
@given(data=st.data())
def test_fuzzed_steps_on_known_migrations(fuzz_agent: Agent, op: Operation,
                                          data: st.DataObject) -> None:
    """The same on migrations in known phases, so fuzzed bodies reach the state machine
    (random ids mostly stop at "unknown migration")."""
    call = data.draw(calls(op, known=True))
    resp = send(fuzz_agent, call)
    check(call, resp)


@FUZZ
@given(data=st.data())
def test_wrong_or_missing_credentials_are_401(fuzz_agent: Agent, data: st.DataObject) -> None:
    """Without this node's token nothing else is looked at: always 401, whatever the body."""
    op = data.draw(st.sampled_from(OPERATIONS))
    call = data.draw(calls(op, auth=BAD_AUTH))
    resp = send(fuzz_agent, call)
    check(call, resp)
    assert resp.status == 401 and json.loads(resp.body)["error"]["code"] == "unauthorized"


def test_agent_is_still_healthy(fuzz_agent: Agent) -> None:
    """After the fuzz tests above the agent still serves, and no crash was simulated."""
    assert fuzz_agent.client.health()["status"] == "ok"
    assert EXITS == []


# -- regressions: what the fuzz found ---------------------------------------------------
def validate(op_id: str, status: int, body: object) -> None:
    schema = BY_ID[op_id].responses[str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)


def test_non_ascii_pinned_certificate_is_400(make_agent: Callable[..., Agent]) -> None:
    """A destination_certificate with a non-ASCII character inside its PEM markers reached
    ssl, which raises TypeError for that: a 500 instead of the 400 any other bad PEM gets."""
    agent = make_agent("n1")
    c = agent.client
    c.put_pod("default", "web", "uid-web", 1024)
    c.prepare("m1", role="source", pod="default/web", uid="uid-web", memory_bytes=1024,
              key=new_key(), peer="https://127.0.0.1:1")
    c.checkpoint("m1", round=0, final=True)
    for pem, words in ((_pem("\u0080"), "PEM certificate"), (_pem("AAAA"), "unusable")):
        with pytest.raises(AgentError) as err:
            c.transfer("m1", destination="https://127.0.0.1:1", token="t",
                       destination_certificate=pem)
        assert (err.value.status, err.value.code) == (400, "bad_request")
        assert words in err.value.message
    assert c.status("m1")["phase"] == "checkpointed"


def test_rollback_of_an_unknown_id_is_a_whole_status(make_agent: Callable[..., Agent]
                                                     ) -> None:
    """Rolling back an id never prepared answered {mid, phase, pod_state} only, and the
    tombstone it leaves has role "none": neither matched MigrationStatus."""
    c = make_agent("n1").client
    first = c.rollback("ghost")
    assert (first["phase"], first["role"], first["pod_state"]) == ("unknown", "none", "absent")
    validate("rollback", 200, first)
    validate("rollback", 200, c.rollback("ghost"))
    validate("getMigration", 200, c.status("ghost"))
    validate("listMigrations", 200, c.list_migrations())


@pytest.mark.parametrize("framing", ["chunked", "malformed"])
def test_credential_is_checked_before_framing(shared_agent: Agent, framing: str) -> None:
    """A chunked body or a malformed Content-Length was refused (411/400) before the
    credential was looked at, so a stranger learnt more than "401"."""
    op = BY_ID["health"]
    for auth, status in ((None, 401), ("Bearer wrong-token-0123456789", 401),
                         ("Bearer {token}", 411 if framing == "chunked" else 400)):
        call = Call(op, op.path, auth, (), b"{}", framing)
        resp = send(shared_agent, call)
        check(call, resp)
        assert resp.status == status, auth


def test_faults_for_any_migration_match_the_spec(make_agent: Callable[..., Agent]) -> None:
    """A fault armed without `mid` is listed with mid null, which FaultList refused."""
    c = make_agent("n1").client
    answer = c.request("POST", "/v1/faults", {"phase": "verify", "mode": "fail"})
    assert answer["faults"][0]["mid"] is None
    validate("addFault", 200, answer)
    validate("listFaults", 200, c.request("GET", "/v1/faults"))
