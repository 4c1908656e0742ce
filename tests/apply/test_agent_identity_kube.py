"""Per-node agent identity with the chart's default `agent.auth.mode: serviceAccountToken`,
on the real kube-apiserver (issue 11).

`--agents kube` mints, for each node, a token of the chart's apply ServiceAccount whose
audience is that node's alone; the agent (started from the DaemonSet's own arguments)
checks it with a TokenReview made with its own ServiceAccount's token, so the chart's
RBAC is what is proven, not an admin's. Every refusal below is an HTTPS call to that
agent answered 401.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livepolicy.agent import AgentClient
from livepolicy.agent.client import AgentError
from livepolicy.agent.config import node_audience
from livepolicy.apply.kube_agents import KubeAgents
from livepolicy.core.diagnostics import DiagnosticError
from livepolicy.kube.client import KubeClient
from livepolicy.kube.resources import SECRETS, Resource
from tests.apply.test_kube_agents import NS, start_chart_agents
from tests.support.envtest import KubeTestEnv

pytestmark = pytest.mark.kube

APPLY_SA = "lp-livepolicy-apply"
ROLES = Resource("Role", "rbac.authorization.k8s.io/v1", "roles")
ROLEBINDINGS = Resource("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings")


@pytest.fixture()
def reviewing_agents(kube: KubeClient, kube_env: KubeTestEnv,
                     tmp_path: Path) -> Iterator[dict[str, Any]]:
    # The agent's own ServiceAccount token: its TokenReviews rest on the chart's RBAC.
    agent_token = kube_env.service_account_token(NS, "lp-livepolicy-agent")
    yield from start_chart_agents(kube, tmp_path, "serviceAccountToken",
                                  kube_env.token_kubeconfig(agent_token))


def _token(kube: KubeClient, sa: str, audiences: list[str] | None) -> str:
    spec: dict[str, Any] = {"expirationSeconds": 600}
    if audiences is not None:
        spec["audiences"] = audiences
    answer = kube.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}/token",
                          body={"apiVersion": "authentication.k8s.io/v1",
                                "kind": "TokenRequest", "spec": spec})
    return str(answer["status"]["token"])


def _refused(ep_url: str, ctx: Any, token: str) -> None:
    with pytest.raises(AgentError) as err:
        AgentClient(ep_url, token, ssl_context=ctx).list_migrations()
    assert err.value.status == 401 and err.value.code == "unauthorized"


def test_apply_mints_a_token_for_each_agent_alone(
        kube: KubeClient, reviewing_agents: dict[str, Any]) -> None:
    """The chart creates no shared token; apply's token for node-a works on node-a, and
    every token that is not exactly that (another node's audience, another account, the
    API server's own audience, a forged JWT) is refused by node-a's agent."""
    assert [s["metadata"]["name"] for s in kube.list(SECRETS, namespace=NS).items] == [
        "lp-livepolicy-agent-tls"]
    ep = KubeAgents(kube).endpoint("node-a")
    assert ep.token.count(".") == 2  # a JWT from TokenRequest, not a Secret's value
    client = AgentClient(ep.url, ep.token, ssl_context=ep.ssl_context)
    assert client.health()["node"] == "node-a"
    assert client.list_migrations() == {"migrations": []}
    ctx = ep.ssl_context
    _refused(ep.url, ctx, _token(kube, APPLY_SA, [node_audience("node-b")]))
    _refused(ep.url, ctx, _token(kube, "lp-livepolicy-agent", [node_audience("node-a")]))
    _refused(ep.url, ctx, _token(kube, APPLY_SA, None))  # the API server's audience
    head, _, _ = ep.token.rpartition(".")
    _refused(ep.url, ctx, head + ".c2lnbmF0dXJl")
    assert "--token-file" not in reviewing_agents["args"]


def test_minting_needs_the_charts_token_role(
        kube: KubeClient, kube_env: KubeTestEnv, reviewing_agents: dict[str, Any]) -> None:
    """A CI identity that may read the agents but not mint their tokens gets a message
    naming the permission; bound to the chart's `-apply-token` Role (what
    agent.auth.applySubjects renders) it works."""
    ci = "ci-runner"
    ci_token = kube_env.service_account_token(NS, ci)
    subject = [{"kind": "ServiceAccount", "name": ci, "namespace": NS}]
    kube.create(ROLES, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                        "metadata": {"name": "read-agents"},
                        "rules": [{"apiGroups": [""], "resources": ["pods"],
                                   "verbs": ["list"]},
                                  {"apiGroups": [""], "resources": ["secrets"],
                                   "resourceNames": ["lp-livepolicy-agent-tls"],
                                   "verbs": ["get"]}]}, NS)
    kube.create(ROLEBINDINGS, _binding("read-agents", subject), NS)
    try:
        with KubeClient.from_config(str(kube_env.token_kubeconfig(ci_token))) as as_ci:
            with pytest.raises(DiagnosticError) as err:
                KubeAgents(as_ci)
            (d,) = err.value.diagnostics
            assert f"TokenRequest for ServiceAccount {NS}/{APPLY_SA}" in d.message
            assert f"serviceaccounts/token of {NS}/{APPLY_SA}" in d.message
            kube.create(ROLEBINDINGS, _binding(f"{APPLY_SA}-token", subject), NS)
            ep = KubeAgents(as_ci).endpoint("node-a")
            assert AgentClient(ep.url, ep.token, ssl_context=ep.ssl_context
                               ).list_migrations() == {"migrations": []}
    finally:
        for name in ("read-agents", f"{APPLY_SA}-token"):
            if kube.get_optional(ROLEBINDINGS, name, NS) is not None:
                kube.delete(ROLEBINDINGS, name, NS)
        kube.delete(ROLES, "read-agents", NS)


def _binding(role: str, subjects: list[dict[str, str]]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": role},
            "subjects": subjects}
