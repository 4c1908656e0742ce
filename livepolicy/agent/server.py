"""The agent's HTTP face: routing, authentication, size bounds, JSON in and out.

Stdlib only (`ThreadingHTTPServer`). Every request, on every route, is checked in this
order: credential (401: agent/auth.py), route (404/405), path identifiers (400), body
length (411/413), body (400), then the service. Nothing is read from an unauthenticated
client beyond its headers and a small bounded drain. Errors are always
`{"error": {"code", "message"}}`.

`ROUTES` is the single list of endpoints; tests check that openapi.yaml documents exactly
these.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from livepolicy.agent.auth import Operator, StaticToken, TokenReviewer, any_of, digest, upload_grant
from livepolicy.agent.config import AgentConfig
from livepolicy.agent.errors import ApiError
from livepolicy.agent.ids import check_mid, check_namespace, check_pod_name
from livepolicy.agent.runtimes.base import Runtime
from livepolicy.agent.service import AgentService

log = logging.getLogger("livepolicy.agent")

Json = dict[str, Any]
BodyKind = Literal["none", "json", "image"]
LINGER_SECONDS = 2.0
LINGER_BYTES = 8 << 20
MAX_JSON_DEPTH = 32  # nesting levels of arrays and objects in a request body
_CONTENT_LENGTH = re.compile(rb"content-length:( ?)([0-9]{1,18})\r?\n", re.IGNORECASE)
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_JSON_TYPES = ("application/json",)


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when `raw` nests arrays/objects deeper than `limit` (brackets in strings skipped).

    Checked before parsing, so a body of `[[[[...` never reaches the recursive decoder."""
    depth = 0
    for m in _STRING_OR_BRACKET.finditer(raw):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif c in (b"]", b"}"):
            depth -= 1
    return False


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or a 400 with a problem that says why."""
    if json_depth_exceeds(raw):
        raise ApiError(400, "invalid_json",
                       f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_json",
                       f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        parsed = json.loads(text)
    except RecursionError:  # belt and braces: the depth scan should have caught it
        raise ApiError(400, "invalid_json", "request body nests too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return parsed


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    operation: str
    body: BodyKind

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.pattern.strip("/").split("/"))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", "health", "none"),
    Route("GET", "/v1/capabilities", "capabilities", "none"),
    Route("GET", "/v1/openapi.yaml", "openapi", "none"),
    Route("GET", "/v1/pods", "listPods", "none"),
    Route("PUT", "/v1/pods/{namespace}/{name}", "putPod", "json"),
    Route("GET", "/v1/migrations", "listMigrations", "none"),
    Route("GET", "/v1/migrations/{mid}", "getMigration", "none"),
    Route("POST", "/v1/migrations/{mid}/prepare", "prepare", "json"),
    Route("POST", "/v1/migrations/{mid}/checkpoint", "checkpoint", "json"),
    Route("POST", "/v1/migrations/{mid}/transfer", "transfer", "json"),
    Route("PUT", "/v1/migrations/{mid}/image", "putImage", "image"),
    Route("POST", "/v1/migrations/{mid}/restore", "restore", "json"),
    Route("POST", "/v1/migrations/{mid}/verify", "verify", "json"),
    Route("POST", "/v1/migrations/{mid}/commit", "commit", "json"),
    Route("POST", "/v1/migrations/{mid}/rollback", "rollback", "json"),
    Route("POST", "/v1/migrations/{mid}/cleanup", "cleanup", "json"),
    Route("GET", "/v1/faults", "listFaults", "none"),
    Route("POST", "/v1/faults", "addFault", "json"),
    Route("DELETE", "/v1/faults", "clearFaults", "none"),
)

_CHECKS: dict[str, Callable[[object], str]] = {
    "mid": check_mid,
    "namespace": check_namespace,
    "name": check_pod_name,
}


def match_route(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route for (method, path) and its decoded path parameters; 404/405/400 otherwise."""
    parts = path.strip("/").split("/") if path.strip("/") else []
    allowed: list[str] = []
    for route in ROUTES:
        segs = route.segments
        if len(segs) != len(parts):
            continue
        params: dict[str, str] = {}
        for seg, part in zip(segs, parts, strict=True):
            if seg.startswith("{"):
                params[seg[1:-1]] = part
            elif seg != part:
                break
        else:
            if route.method != method:
                allowed.append(route.method)
                continue
            # Decode after splitting: "%2F" stays inside its segment and fails validation.
            decoded = {k: unquote(v, errors="strict") for k, v in params.items()}
            for key, value in decoded.items():
                _CHECKS[key](value)
            return route, decoded
    if allowed:
        raise ApiError(405, "method_not_allowed", f"use {', '.join(sorted(allowed))}")
    raise ApiError(404, "not_found", "no such endpoint")


def _route_or_none(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    try:
        return match_route(method, path)
    except (ApiError, UnicodeDecodeError):
        return None, {}


def operator_check(config: AgentConfig) -> Operator:
    """This node's operator credential: its static token, a reviewed ServiceAccount token
    with its audience, or either."""
    checks: list[Operator] = []
    if config.token:
        checks.append(StaticToken(digest(config.token)))
    if config.auth_audience:
        from livepolicy.kube.client import KubeClient  # only agents that review tokens

        client = KubeClient.from_config(str(config.auth_kubeconfig) if config.auth_kubeconfig
                                        else None)
        checks.append(TokenReviewer(client, config.auth_audience,
                                    frozenset(config.auth_allow)))
    return any_of(*checks)


def openapi_text() -> str:
    return resources.files("livepolicy.agent").joinpath("openapi.yaml").read_text("utf-8")


class _HeaderRecorder:
    """Wraps the request's rfile while http.server reads the header block, keeping the raw
    Content-Length lines (continuation lines of one are kept with it)."""

    def __init__(self, rfile: Any) -> None:
        self._rfile = rfile
        self.lengths: list[bytes] = []
        self._in_length = False

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self._rfile.readline(limit)
        if line[:1] in (b" ", b"\t") and self._in_length:
            self.lengths[-1] += line
            return line
        self._in_length = line[:15].lower() == b"content-length:"
        if self._in_length:
            self.lengths.append(line)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rfile, name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    service: AgentService
    operator: Operator  # this node's operator credential (agent/auth.py)
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the per-connection thread, so a slow TLS handshake blocks only itself.
        request.settimeout(self.service.config.request_timeout)
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                # A client that hangs up before or during the handshake (the kubelet's
                # tcpSocket probes, every few seconds) is not worth an INFO line.
                quiet = isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ConnectionError
                                   | TimeoutError)
                log.log(logging.DEBUG if quiet else logging.INFO,
                        "TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error from %s", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "livepolicy-agent"
    sys_version = ""

    def setup(self) -> None:
        super().setup()  # the socket timeout was set in _Server.finish_request
        self._remaining = 0  # body bytes announced by the client and not read yet
        self._raw_lengths: list[bytes] = []

    def parse_request(self) -> bool:
        # http.client strips whitespace from header values; record the raw Content-Length
        # lines so that a malformed one (" 5", "5 ", folded, twice) is refused at once
        # instead of waiting for a body the client may never send.
        real = self.rfile
        recorder = _HeaderRecorder(real)
        self.rfile = recorder  # type: ignore[assignment]
        try:
            return super().parse_request()
        finally:
            self.rfile = real
            self._raw_lengths = recorder.lengths

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    # Every method goes through the same gate; unknown ones get a JSON 501 from send_error.
    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def _handle(self) -> None:
        self._remaining = 0
        try:
            try:
                self._remaining = self._content_length()
            except ApiError:
                # Bad framing is refused, but a client without the credential learns only
                # that it lacks one (401 first, as for everything else).
                self._authenticate(urlsplit(self.path).path)
                raise
            status, payload = self._dispatch()
            self._reply(status, payload)
        except ApiError as exc:
            self._reply(exc.status, exc.to_json())
        except Exception:
            log.exception("internal error on %s %s", self.command, self.path)
            self._reply(500, ApiError(500, "internal", "internal agent error (see log)").to_json())
        finally:
            if self._remaining > 0:
                self._linger()

    def _content_length(self) -> int:
        if "Transfer-Encoding" in self.headers:
            self._remaining = LINGER_BYTES  # unknown size: linger on close
            raise ApiError(411, "length_required", "chunked bodies are not accepted")
        lines = self._raw_lengths
        if not lines and "Content-Length" not in self.headers:
            return 0
        if len(lines) != 1 or len(self.headers.get_all("Content-Length") or []) != 1:
            raise ApiError(400, "bad_request", "exactly one Content-Length header is allowed")
        m = _CONTENT_LENGTH.fullmatch(lines[0])
        if m is None:
            raise ApiError(400, "bad_request",
                           "invalid Content-Length: 1 to 18 ASCII digits after 'Content-Length: '")
        return int(m.group(2))

    def read(self, n: int = -1) -> bytes:
        """Read up to `n` bytes of the request body (file-like, for image uploads)."""
        want = self._remaining if n < 0 else min(n, self._remaining)
        data = self.rfile.read(want) if want > 0 else b""
        self._remaining -= len(data)
        return data

    def _authenticate(self, path: str) -> None:
        """The operator's credential for this node opens every route; an upload grant
        (agent/auth.py) only the image upload of its own migration. Anything else is a
        401 before the route is even looked at."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            if self.server.operator(token):
                return
            route, params = _route_or_none(self.command, path)
            if route is not None and route.operation == "putImage" and upload_grant(
                    token, self.server.service.upload_grant(params["mid"])):
                return
        raise ApiError(401, "unauthorized", "missing or wrong bearer token")

    def _dispatch(self) -> tuple[int, Json | str]:
        path = urlsplit(self.path).path
        self._authenticate(path)
        try:
            route, params = match_route(self.command, path)
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_identifier", "path is not valid UTF-8") from None
        config = self.server.service.config
        if route.body == "image":
            if "Content-Length" not in self.headers:
                raise ApiError(411, "length_required", "Content-Length is required")
            if self._remaining > config.max_image_bytes:
                raise ApiError(413, "too_large", f"image limit is {config.max_image_bytes} bytes")
            sha = self.headers.get("X-Image-Sha256")
            length = self._remaining
            return 200, self.server.service.receive_image(params["mid"], self, length, sha)
        if self._remaining > config.max_json_bytes:
            raise ApiError(413, "too_large", f"request body limit is {config.max_json_bytes} bytes")
        raw = self._read_body()
        body: Json = {}
        if route.body == "json" and raw.strip():
            ctype = self.headers.get("Content-Type")
            if ctype is not None and ctype.split(";")[0].strip().lower() not in _JSON_TYPES:
                raise ApiError(415, "unsupported_media_type",
                               "a request body must be application/json")
            body = parse_json_body(raw)
        return self._call(route, params, body)

    def _read_body(self) -> bytes:
        expected = self._remaining
        data = self.read(expected)
        if len(data) != expected:
            self._remaining = 0
            raise ApiError(400, "incomplete_body", "body shorter than Content-Length")
        return data

    def _call(self, route: Route, p: dict[str, str], body: Json) -> tuple[int, Json | str]:
        svc = self.server.service
        op = route.operation
        simple: dict[str, Callable[[], Json]] = {
            "health": svc.health,
            "capabilities": svc.capabilities,
            "listPods": svc.list_pods,
            "listMigrations": svc.list_migrations,
            "listFaults": svc.list_faults,
            "clearFaults": svc.clear_faults,
        }
        if op in simple:
            return 200, simple[op]()
        if op == "openapi":
            return 200, openapi_text()
        if op == "putPod":
            return svc.put_pod(p["namespace"], p["name"], body)
        if op == "addFault":
            return 200, svc.add_fault(body)
        mid = p["mid"]
        with_body: dict[str, Callable[[str, Json], Json]] = {
            "prepare": svc.prepare,
            "checkpoint": svc.checkpoint,
            "transfer": svc.transfer,
        }
        if op in with_body:
            return 200, with_body[op](mid, body)
        no_body: dict[str, Callable[[str], Json]] = {
            "getMigration": svc.status,
            "restore": svc.restore,
            "verify": svc.verify,
            "commit": svc.commit,
            "rollback": svc.rollback,
            "cleanup": svc.cleanup,
        }
        return 200, no_body[op](mid)

    def _reply(self, status: int, payload: Json | str) -> None:
        if 0 < self._remaining <= self.server.service.config.max_json_bytes:
            # Drain a small unread body first, so closing does not reset the connection
            # before the client has read this answer.
            with contextlib.suppress(OSError, ApiError):
                self._read_body()
        if isinstance(payload, str):
            data, ctype = payload.encode(), "application/yaml"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="livepolicy-agent"')
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            log.info("client went away before the answer to %s %s", self.command, self.path)
        self.close_connection = True

    def _linger(self) -> None:
        """After refusing a large body, read (and drop) a bounded amount of it so the client
        sees our answer instead of a connection reset."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + LINGER_SECONDS
            seen = 0
            while time.monotonic() < deadline and seen < LINGER_BYTES:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                seen += len(chunk)
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors raised by http.server itself (bad request line, huge headers...), as JSON."""
        err = ApiError(code, "bad_request" if code < 500 else "not_implemented", message or "")
        self.close_connection = True
        self.send_response(code, message)
        data = json.dumps(err.to_json()).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _server_ssl_context(config: AgentConfig) -> ssl.SSLContext | None:
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    if config.tls_client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(config.tls_client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class AgentServer:
    """One agent: service + HTTP server, runnable in a background thread.

    >>> server = AgentServer(config); port = server.start(); ...; server.stop()
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        runtime: Runtime | None = None,
        exit_hook: Callable[[int], object] = os._exit,
        poll_interval: float = 0.2,
    ) -> None:
        self.config = config
        self._poll_interval = poll_interval  # how quickly stop() is noticed
        self._stop = threading.Event()
        self.service = AgentService(config, runtime=runtime, stop=self._stop, exit_hook=exit_hook)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls_enabled else "http"
        host = f"[{self.config.address}]" if ":" in self.config.address else self.config.address
        return f"{scheme}://{host}:{self.port}"

    def start(self) -> int:
        """Bind, serve in a daemon thread, return the bound port (useful with port 0)."""
        cls = _Server6 if ":" in self.config.address else _Server
        httpd = cls((self.config.address, self.config.port), _Handler)
        httpd.service = self.service
        httpd.operator = operator_check(self.config)
        httpd.ssl_context = _server_ssl_context(self.config)
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": self._poll_interval},
            name=f"agent-{self.config.node}",
            daemon=True,
        )
        self._thread.start()
        log.info("agent %s listening on %s", self.config.node, self.url)
        return self.port

    def stop(self) -> None:
        """Stop serving; in-flight hangs and simulated sleeps are released."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> AgentServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(config: AgentConfig, on_ready: Callable[[AgentServer], None] | None = None) -> None:
    """Run an agent until SIGTERM or SIGINT."""
    server = AgentServer(config)
    done = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        done.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    server.start()
    try:
        if on_ready is not None:
            on_ready(server)
        done.wait()
    finally:
        server.stop()
