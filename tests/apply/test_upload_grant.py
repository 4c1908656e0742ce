"""apply hands the source a one-migration upload grant, never the destination's own token
(issue 11: with per-node tokens a compromised source must not learn another node's)."""

from __future__ import annotations

from typing import Any

import pytest

from livepolicy.agent.auth import hex_digest
from livepolicy.agent.client import AgentClient

from .conftest import RigFactory


def test_the_source_gets_an_upload_grant_not_the_destinations_token(
        rig: RigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared: dict[str, str] = {}
    sent: dict[str, str] = {}
    real_prepare, real_transfer = AgentClient.prepare, AgentClient.transfer

    def prepare(self: AgentClient, mid: str, **kw: Any) -> Any:
        if kw.get("upload_token_sha256"):
            prepared[mid] = kw["upload_token_sha256"]
        return real_prepare(self, mid, **kw)

    def transfer(self: AgentClient, mid: str, **kw: Any) -> Any:
        sent[mid] = kw["token"]
        return real_transfer(self, mid, **kw)

    monkeypatch.setattr(AgentClient, "prepare", prepare)
    monkeypatch.setattr(AgentClient, "transfer", transfer)
    r = rig()
    result = r.run()
    assert result.outcomes and result.count("migrated") == len(result.outcomes)
    node_tokens = {a.token for a in r.pool.agents.values()}
    assert len(node_tokens) == len(r.pool.agents)  # one token per node
    assert sent and set(sent) == set(prepared)
    for mid, token in sent.items():
        assert token not in node_tokens
        assert hex_digest(token) == prepared[mid]  # the grant the destination holds
    assert len(set(sent.values())) == len(sent)  # a fresh grant per migration
