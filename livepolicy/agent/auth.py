"""Who may call an agent: the operator with this node's own credential, or a peer holding
a grant for one image upload.

One token shared by every agent (issue 11) let one compromised node call every other
node's agent and pull memory images. Now no credential is good on two nodes:

- **Operator** (apply, the controller): a credential bound to this node, either a static
  token of this node alone (`--token-file`: the lab, `--agents sim`, AGENTS.yaml) or a
  Kubernetes ServiceAccount token whose audience names this node (`--auth-audience`,
  checked with a TokenReview; the chart's default). A token minted for node A is refused
  by node B's agent, by the API server itself.
- **Upload grant**: peers never hold an operator credential. For each migration apply
  gives the destination the SHA-256 of a fresh random token (prepare,
  `upload_token_sha256`) and the source the token itself (transfer). It opens exactly
  one route, `PUT /v1/migrations/{mid}/image` of that migration, while the destination
  is receiving. A source that is compromised learns nothing it can use elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from livepolicy.agent.errors import ApiError

log = logging.getLogger("livepolicy.agent")

TOKENREVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
REVIEW_TTL_S = 30.0  # how long an answer of the API server is reused (kube-apiserver: 10 s)
REVIEW_CACHE = 1024


def digest(token: str | bytes) -> bytes:
    """SHA-256 of a token, compared in constant time; the agent keeps no token it need not."""
    raw = token.encode("latin-1", "replace") if isinstance(token, str) else token
    return hashlib.sha256(raw).digest()


def hex_digest(token: str) -> str:
    return digest(token).hex()


class Operator(Protocol):
    """Decides whether a bearer token is this node's operator credential."""

    def __call__(self, token: str) -> bool: ...


@dataclass(frozen=True)
class StaticToken:
    """This node's own token (its SHA-256 only is kept)."""

    sha256: bytes = field(repr=False)

    def __call__(self, token: str) -> bool:
        return hmac.compare_digest(digest(token), self.sha256)


class Requester(Protocol):
    """The part of `livepolicy.kube.client.KubeClient` a TokenReview needs."""

    def request(self, method: str, path: str, *, body: Any = None) -> Any: ...


class TokenReviewer:
    """A ServiceAccount token of an allowed user, with this node's audience.

    The audience is the binding to the node: apply asks the API server for a token with
    audience `livepolicy.io/agent/<node>` (TokenRequest), so that token is worth nothing
    to any other node's agent. Answers are cached for REVIEW_TTL_S by token digest, so a
    migration's few dozen calls cost one review; the API server being unreachable is a
    503 (apply retries), never a silent accept.
    """

    def __init__(self, client: Requester, audience: str, allowed: frozenset[str]) -> None:
        self.client, self.audience, self.allowed = client, audience, allowed
        self._cache: dict[bytes, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def __call__(self, token: str) -> bool:
        if not token or token.count(".") != 2:  # not a JWT: no need to ask
            return False
        key, now = digest(token), time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        ok = self._review(token)
        with self._lock:
            if len(self._cache) >= REVIEW_CACHE:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= REVIEW_CACHE:
                    self._cache.clear()
            self._cache[key] = (now + REVIEW_TTL_S, ok)
        return ok

    def _review(self, token: str) -> bool:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token, "audiences": [self.audience]}}
        try:
            answer = self.client.request("POST", TOKENREVIEWS, body=body)
        except Exception as exc:  # any failure to ask is "cannot tell", never "yes"
            log.warning("TokenReview failed: %s", exc)
            raise ApiError(503, "auth_unavailable",
                           f"cannot verify the token with the API server: {exc}") from None
        status = (answer or {}).get("status") or {}
        user = (status.get("user") or {}).get("username", "")
        ok = (status.get("authenticated") is True and self.audience in
              (status.get("audiences") or []) and user in self.allowed)
        if status.get("authenticated") is True and not ok:
            log.warning("token of %s refused: not in --auth-allow or wrong audience", user)
        return ok


def any_of(*checks: Operator) -> Operator:
    """Accept a token any configured check accepts (a static token, then a review)."""

    def check(token: str) -> bool:
        return any(c(token) for c in checks)

    return check


def upload_grant(token: str, grant_sha256: str) -> bool:
    """Whether `token` is the upload token whose SHA-256 the operator gave at prepare."""
    return bool(grant_sha256) and hmac.compare_digest(hex_digest(token), grant_sha256)
