"""The kubelet's checkpoint API (KEP-2008), as the `kubelet` runtime calls it.

`POST https://<node>:10250/checkpoint/{namespace}/{pod}/{container}?timeout=S` asks the
kubelet to have the container runtime (CRI `CheckpointContainer`) write an archive
`checkpoint-<pod>_<namespace>-<container>-<timestamp>.tar` under
`<kubelet root>/checkpoints` and answers `{"items": ["<path of that archive>"]}`
(kubernetes `pkg/kubelet/server/server.go`, `checkpoint`). The call is authenticated
with a bearer token (the agent's ServiceAccount token, re-read on every call because
projected tokens rotate) or a client certificate; the kubelet authorizes it as the
`checkpoint` subresource of `nodes` (RBAC `nodes/checkpoint`, verb `create`).

Answers are mapped to stable `ApiError` codes the engine can branch on:
404 `checkpoint_unavailable` (the ContainerCheckpoint gate is off: the kubelet has no
such route) or `pod_not_found` (the kubelet does not know the pod or container),
500 `checkpoint_failed` (the CRI runtime lacks checkpoint support or CRIU failed),
401/403 `kubelet_unauthorized`/`kubelet_forbidden`.

Tested against a fake kubelet (a real HTTPS server on loopback) serving recorded
responses, and against real kubelets in tests/nodes.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from livepolicy.agent.errors import ApiError

DEFAULT_KUBELET_URL = "https://127.0.0.1:10250"
SA_TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
MAX_ANSWER = 1 << 16


@dataclass(frozen=True)
class KubeletAuth:
    """How the agent proves who it is to the kubelet, and how it checks the kubelet."""

    ca_file: Path | None = None  # None: the system trust store
    token_file: Path | None = SA_TOKEN_FILE
    client_cert: Path | None = None
    client_key: Path | None = None


class KubeletClient:
    """Checkpoint calls to one kubelet."""

    def __init__(self, url: str, auth: KubeletAuth, *, timeout: float = 900.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"kubelet URL must be https://HOST[:PORT], got {url!r}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 10250
        self.auth = auth
        self.timeout = timeout

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(
            cafile=str(self.auth.ca_file) if self.auth.ca_file else None)
        if self.auth.client_cert is not None:
            ctx.load_cert_chain(self.auth.client_cert, self.auth.client_key)
        return ctx

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.auth.token_file is not None and self.auth.client_cert is None:
            try:
                token = self.auth.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ApiError(500, "kubelet_unauthorized", f"cannot read the token for the "
                               f"kubelet from {self.auth.token_file}: {exc}") from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def checkpoint(self, namespace: str, pod: str, container: str,
                   timeout_s: int) -> str:
        """Checkpoint one container; returns the archive path the kubelet reported."""
        path = "/checkpoint/" + "/".join(urllib.parse.quote(p, safe="")
                                         for p in (namespace, pod, container))
        if timeout_s > 0:
            path += f"?timeout={int(timeout_s)}"
        what = f"{namespace}/{pod}/{container}"
        try:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self._context(),
                                               timeout=self.timeout + max(timeout_s, 0))
            try:
                conn.request("POST", path, headers=self._headers())
                resp = conn.getresponse()
                status, raw = resp.status, resp.read(MAX_ANSWER)
            finally:
                conn.close()
        except ssl.SSLError as exc:
            raise ApiError(502, "kubelet_unreachable", f"TLS with the kubelet at {self.url} "
                           f"failed: {exc} (check --kubelet-ca)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(502, "kubelet_unreachable",
                           f"cannot reach the kubelet at {self.url}: {exc}") from None
        text = raw.decode("utf-8", "replace").strip()
        if status == 200:
            return _archive_path(text, what)
        raise map_error(status, text, what, self.url)


def _archive_path(text: str, what: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], str):
        raise ApiError(502, "checkpoint_failed", f"the kubelet answered the checkpoint of "
                       f"{what} without one archive path: {text[:200]!r}")
    return items[0]


def map_error(status: int, text: str, what: str, url: str) -> ApiError:
    """A kubelet refusal as an `ApiError` with a stable code and what to do about it."""
    detail = text[:300] or "(empty answer)"
    if status == 404:
        if "does not exist" in text:  # "pod does not exist", "container X does not exist"
            return ApiError(404, "pod_not_found", f"the kubelet at {url} does not know "
                            f"{what}: {detail}")
        return ApiError(404, "checkpoint_unavailable", f"the kubelet at {url} has no checkpoint "
                        f"API ({detail}): enable the ContainerCheckpoint feature gate (beta, "
                        "on by default since Kubernetes 1.30)")
    if status == 401:
        return ApiError(502, "kubelet_unauthorized", f"the kubelet at {url} rejected the "
                        f"agent's credentials (401: {detail}); check --kubelet-token-file or "
                        "the client certificate")
    if status == 403:
        return ApiError(502, "kubelet_forbidden", f"the kubelet at {url} refused to checkpoint "
                        f"{what} (403: {detail}); grant the agent's ServiceAccount create on "
                        "nodes/checkpoint")
    if status == 500:
        return ApiError(500, "checkpoint_failed", f"the container runtime could not checkpoint "
                        f"{what}: {detail} (needs containerd >= 2.0 or CRI-O with CRIU support)")
    return ApiError(502, "kubelet_error", f"the kubelet at {url} answered {status} to the "
                    f"checkpoint of {what}: {detail}")
