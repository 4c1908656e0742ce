"""Client of the agent HTTP API, used by the apply engine (stdlib `http.client` only).

One short-lived connection per call, so an `AgentClient` can be shared between threads.
Outcomes are three-valued, and the engine must treat them differently:
- a dict: the agent did it (every step is idempotent, so a repeat returns the same);
- `AgentError(status, code, message)`: the agent answered and refused or failed;
- `AgentUnreachable`: no answer (refused connection, reset, timeout, agent crashed): the
  step may or may not have happened; ask `status(mid)` once the agent is back, or retry.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any
from urllib.parse import quote, urlsplit

Json = dict[str, Any]


class AgentClientError(Exception):
    """Base of everything the client raises."""


class AgentError(AgentClientError):
    """The agent answered with an HTTP error; `code` is stable (see docs/agent-api.md)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class AgentUnreachable(AgentClientError):
    """No answer from the agent: connection refused or reset, timeout, bad response."""


def _seg(value: str) -> str:
    return quote(value, safe="")


class AgentClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float = 30.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"agent URL must be http(s)://host:port, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._ssl = ssl_context

    def __repr__(self) -> str:
        return f"AgentClient({self.base_url!r})"

    # -- transport -----------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def request(self, method: str, path: str, body: Json | None = None) -> Json:
        """Send one request; the parsed JSON object answered, or AgentError/AgentUnreachable."""
        data = json.dumps(body).encode() if body is not None else b""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "Content-Length": str(len(data)),
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn = self._connection()
        try:
            conn.request(method, self._prefix + path, body=data or None, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AgentUnreachable(f"{method} {self.base_url}{path}: {exc!r}") from exc
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = None
        if resp.status >= 400:
            err = parsed.get("error") if isinstance(parsed, dict) else None
            if isinstance(err, dict):
                raise AgentError(resp.status, str(err.get("code")), str(err.get("message")))
            raise AgentError(resp.status, "bad_response", raw[:200].decode("utf-8", "replace"))
        if not isinstance(parsed, dict):
            raise AgentUnreachable(f"{method} {self.base_url}{path}: answer is not a JSON object")
        return parsed

    # -- node ----------------------------------------------------------------------------
    def health(self) -> Json:
        return self.request("GET", "/v1/health")

    def capabilities(self) -> Json:
        return self.request("GET", "/v1/capabilities")

    def list_pods(self) -> Json:
        """{"pods": [{"namespace", "name", "uid", "state", "memory_bytes", "counter", ...}]}"""
        return self.request("GET", "/v1/pods")

    def put_pod(
        self, ns: str, name: str, uid: str, memory_bytes: int, dirty_rate_bytes: int = 0
    ) -> Json:
        body = {"uid": uid, "memory_bytes": memory_bytes, "dirty_rate_bytes": dirty_rate_bytes}
        return self.request("PUT", f"/v1/pods/{_seg(ns)}/{_seg(name)}", body)

    # -- migration steps -----------------------------------------------------------------
    def _mig(self, mid: str, action: str = "") -> str:
        return f"/v1/migrations/{_seg(mid)}" + (f"/{action}" if action else "")

    def prepare(
        self,
        mid: str,
        *,
        role: str,
        pod: str,
        uid: str,
        memory_bytes: int,
        key: str,
        peer: str,
        memory_transfer: str | None = None,
        upload_token_sha256: str | None = None,
    ) -> Json:
        body = {
            "role": role,
            "pod": pod,
            "uid": uid,
            "memory_bytes": memory_bytes,
            "key": key,
            "peer": peer,
        }
        if memory_transfer is not None:
            body["memory_transfer"] = memory_transfer
        if upload_token_sha256 is not None:
            body["upload_token_sha256"] = upload_token_sha256
        return self.request("POST", self._mig(mid, "prepare"), body)

    def checkpoint(self, mid: str, *, round: int, final: bool) -> Json:
        return self.request("POST", self._mig(mid, "checkpoint"), {"round": round, "final": final})

    def transfer(self, mid: str, *, destination: str, token: str, force: bool = False,
                 destination_certificate: str | None = None) -> Json:
        body: Json = {"destination": destination, "token": token}
        if destination_certificate:
            body["destination_certificate"] = destination_certificate
        if force:
            body["force"] = True
        return self.request("POST", self._mig(mid, "transfer"), body)

    def restore(self, mid: str) -> Json:
        return self.request("POST", self._mig(mid, "restore"), {})

    def verify(self, mid: str) -> Json:
        return self.request("POST", self._mig(mid, "verify"), {})

    def commit(self, mid: str) -> Json:
        return self.request("POST", self._mig(mid, "commit"), {})

    def rollback(self, mid: str) -> Json:
        return self.request("POST", self._mig(mid, "rollback"), {})

    def cleanup(self, mid: str) -> Json:
        return self.request("POST", self._mig(mid, "cleanup"), {})

    def status(self, mid: str) -> Json:
        return self.request("GET", self._mig(mid))

    def list_migrations(self) -> Json:
        """{"migrations": [status, ...]}: everything this agent remembers, oldest first."""
        return self.request("GET", "/v1/migrations")

    # -- fault injection (sim runtime) ---------------------------------------------------
    def set_fault(
        self,
        phase: str,
        mode: str,
        count: int = 1,
        seconds: float | None = None,
        *,
        when: str = "before",
        factor: float | None = None,
        mid: str | None = None,
    ) -> Json:
        body: Json = {"phase": phase, "mode": mode, "count": count, "when": when}
        if seconds is not None:
            body["seconds"] = seconds
        if factor is not None:
            body["factor"] = factor
        if mid is not None:
            body["mid"] = mid
        return self.request("POST", "/v1/faults", body)

    def clear_faults(self) -> Json:
        return self.request("DELETE", "/v1/faults")
