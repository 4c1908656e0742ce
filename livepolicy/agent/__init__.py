"""Node agents: the HTTP API that checkpoints, moves and restores pods, and its client.

The apply engine imports `AgentClient`; nodes run `python -m livepolicy.agent` (or
`livepolicy agent`). Layout: `server` (HTTP, auth, bounds) -> `service` (behaviour,
commit point, idempotency) -> `runtimes` (sim, later criu/kubelet); `images` + `crypto`
keep checkpoint images encrypted and owner-only. See docs/agent-api.md.
"""

from livepolicy.agent.client import AgentClient, AgentClientError, AgentError, AgentUnreachable
from livepolicy.agent.config import AgentConfig
from livepolicy.agent.crypto import new_key

__all__ = [
    "AgentClient",
    "AgentClientError",
    "AgentConfig",
    "AgentError",
    "AgentUnreachable",
    "new_key",
]
