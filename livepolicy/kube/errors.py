"""Errors of the Kubernetes adapter, and their translation into user-facing diagnostics."""

from __future__ import annotations

from dataclasses import dataclass

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError


@dataclass
class KubeError(Exception):
    """A failed API call, or a configuration that cannot reach any API server.

    `status` is the HTTP status (0 when no response came back); `reason` is the
    Kubernetes Status reason (`NotFound`, `Conflict`, `Forbidden`, `Expired`, ...) when the
    server sent one.
    """

    message: str
    status: int = 0
    reason: str = ""
    method: str = ""
    path: str = ""
    server: str = ""

    def __str__(self) -> str:
        return self.message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410

    def diagnostic(self, where: str = "kube") -> Diagnostic:
        return Diagnostic(where, self.message, None)

    def as_diagnostic_error(self, where: str = "kube") -> DiagnosticError:
        return DiagnosticError([self.diagnostic(where)])


class KubeConfigError(KubeError):
    """No usable kubeconfig or in-cluster configuration."""


def explain(status: int, reason: str, server_message: str, method: str, path: str,
            server: str, user: str) -> str:
    """One clear sentence for a failed call, saying what to do about the usual causes."""
    what = f"{method} {path}"
    if status == 401:
        who = user or "the kubeconfig user"
        return (f"the Kubernetes API at {server} rejected the credentials of {who} "
                f"(401 Unauthorized on {what}); refresh the token or certificate in the "
                "kubeconfig")
    if status == 403:
        return (f"forbidden: {server_message or what} (403 on {what}); grant the missing "
                "permission (docs/kubernetes.md lists the ClusterRole livepolicy needs)")
    if status == 404:
        return f"not found: {server_message or what} (404 on {what})"
    detail = f": {server_message}" if server_message else ""
    label = f"{status} {reason}".strip()
    return f"the Kubernetes API at {server} answered {label} to {what}{detail}"
