"""The agents file of `apply --agents AGENTS.yaml`: where each node's agent answers.

Real clusters run agents behind their own CA (the Helm chart generates one), so an entry
may name the CA to trust and a client certificate for mutual TLS besides the URL and the
bearer token. The file is checked whole before apply takes its lock: every problem comes
back at once as `file:line:col: message (at /pointer)`, never as a traceback.

```yaml
ip-10-0-1-5.ec2.internal:
  url: https://10.0.1.5:8443
  tokenFile: /var/run/livepolicy/agent-token
  caFile: /var/run/livepolicy/agent-ca.crt     # optional; default: the system store
  certFile: /var/run/livepolicy/client.crt     # optional, with keyFile: mutual TLS
  keyFile: /var/run/livepolicy/client.key
```
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from livepolicy.apply.agent_table import AgentTable, tls_context
from livepolicy.apply.engine import AgentEndpoint
from livepolicy.core.diagnostics import Diagnostic, DiagnosticError, join_pointer
from livepolicy.core.yamlsrc import load_fast, locate_in_file

_KEYS = ("url", "tokenFile", "caFile", "certFile", "keyFile")


def _problems(node: str, spec: Any) -> list[tuple[str, str]]:
    """(pointer, message) for one entry; empty when it is usable."""
    at = join_pointer("", node)
    if not isinstance(spec, dict):
        return [(at, "must be a mapping with url and tokenFile")]
    out = [(join_pointer(at, k), f"unknown field {k!r} (known: {', '.join(_KEYS)})")
           for k in spec if k not in _KEYS]
    url = spec.get("url")
    if not isinstance(url, str) or not url:
        out.append((join_pointer(at, "url"), "url is required (http(s)://host:port)"))
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            out.append((join_pointer(at, "url"), f"not an http(s)://host:port URL: {url!r}"))
        elif parts.scheme == "http" and any(k in spec for k in _KEYS[2:]):
            out.append((join_pointer(at, "url"), "caFile, certFile and keyFile need https"))
    if "tokenFile" not in spec:
        out.append((join_pointer(at, "tokenFile"), "tokenFile is required"))
    if ("certFile" in spec) != ("keyFile" in spec):
        out.append((at, "certFile and keyFile go together"))
    for key in _KEYS[1:]:
        if key in spec and not Path(str(spec[key])).is_file():
            out.append((join_pointer(at, key), f"cannot read {key} {spec[key]!s}"))
    return out


def _tls(spec: dict[str, Any]) -> ssl.SSLContext | None:
    ctx = tls_context(str(spec["url"]),
                      cafile=str(spec["caFile"]) if "caFile" in spec else None)
    if ctx is not None and "certFile" in spec:
        ctx.load_cert_chain(str(spec["certFile"]), str(spec["keyFile"]))
    return ctx


class StaticAgents(AgentTable):
    """Agents listed in a file (YAML or JSON), validated whole on load."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        name = str(path)
        self.path = path
        data = load_fast(path)
        if not isinstance(data, dict) or not data:
            raise DiagnosticError([Diagnostic(name, "an agents file maps node names to "
                                              "{url, tokenFile[, caFile, certFile, keyFile]}",
                                              "", 1, 1)])
        found = [p for node, spec in data.items() for p in _problems(str(node), spec)]
        if found:
            places = locate_in_file(path, [p for p, _ in found])
            raise DiagnosticError([Diagnostic(name, msg, ptr, line, col)
                                   for (ptr, msg), (line, col) in zip(found, places, strict=True)])
        bad: list[Diagnostic] = []
        for node, spec in data.items():
            try:
                token = Path(str(spec["tokenFile"])).read_text(encoding="utf-8").strip()
                ctx = _tls(spec)
            except (OSError, ssl.SSLError, UnicodeDecodeError) as exc:
                bad.append(Diagnostic(name, f"agent of {node}: {exc}", join_pointer("", node)))
                continue
            self.endpoints[str(node)] = AgentEndpoint(str(node), str(spec["url"]), token, ctx)
        if bad:
            raise DiagnosticError(bad)

    def missing(self, node: str) -> str:
        return f"no agent is listed for node {node} in {self.path}"
