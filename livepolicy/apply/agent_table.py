"""Node -> agent endpoint tables, whatever they were read from (a file, the cluster).

`StaticAgents` (an AGENTS.yaml) and `KubeAgents` (the chart's DaemonSet) differ only in
where the endpoints come from; both answer `endpoint(node)` for the engine and `require`
the nodes of a plan before apply confirms or locks anything, so a node without an agent
costs nothing but a located message.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from typing import Any

from livepolicy.apply.engine import AgentEndpoint
from livepolicy.core.diagnostics import Diagnostic, DiagnosticError


def plan_nodes(doc: Mapping[str, Any]) -> list[str]:
    """Every node a plan's migrations need an agent on (sources and destinations)."""
    return sorted({str(m[k]) for m in doc.get("migrations") or [] for k in ("from", "to")})


def tls_context(url: str, *, cafile: str | None = None, cadata: str | None = None
                ) -> ssl.SSLContext | None:
    """The client TLS context for an agent URL: None for http, else the given CA (file or
    PEM text) or the system store. A client certificate is loaded by the caller."""
    if not url.startswith("https:"):
        return None
    if cadata is not None:
        return ssl.create_default_context(cadata=cadata)
    return ssl.create_default_context(cafile=cafile)


class AgentTable:
    """Agents known by node name. Subclasses fill `endpoints` and say where they looked."""

    #: the option the table came from, for messages (`--agents`)
    where = "--agents"

    def __init__(self) -> None:
        self.endpoints: dict[str, AgentEndpoint] = {}

    def missing(self, node: str) -> str:
        """Why `node` has no agent (one sentence; subclasses say where they looked)."""
        return f"no agent is listed for node {node}"

    def endpoint(self, node: str) -> AgentEndpoint:
        try:
            return self.endpoints[node]
        except KeyError:
            raise DiagnosticError([Diagnostic(self.where, self.missing(node), None)]) from None

    def require(self, nodes: Iterable[str]) -> None:
        """Every node of `nodes` has an agent, or one located problem per node that has
        none (checked before apply confirms or takes its lock)."""
        lacking = sorted(set(nodes) - set(self.endpoints))
        if lacking:
            raise DiagnosticError([Diagnostic(self.where, self.missing(n), None)
                                   for n in lacking])
