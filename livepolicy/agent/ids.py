"""Validation of every identifier that reaches the agent from the network.

Migration ids become directory names under the image store, so they are held to a strict
DNS-label grammar (no dots, no slashes, no percent signs): no value that passes can name a
path outside `<state_dir>/images/`. Namespaces, pod names and uids follow Kubernetes'
own grammars, checked with `re.fullmatch` (a `$` anchor would accept a trailing newline).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from livepolicy.agent.errors import ApiError

MAX_LABEL = 63
MAX_SUBDOMAIN = 253
MAX_URL = 2048

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
_UID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,126}[A-Za-z0-9])?")
_LABEL_HINT = "use 1-63 of [a-z0-9-], alphanumeric at both ends"
_SUBDOMAIN_HINT = "use 1-253 of [a-z0-9.-], alphanumeric at both ends"


def _check(kind: str, value: object, pattern: re.Pattern[str], hint: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
        shown = repr(value)[:80]
        raise ApiError(400, "invalid_identifier", f"invalid {kind} {shown}: {hint}")
    return value


def check_mid(value: object) -> str:
    """A migration id: a DNS label (lowercase letters, digits, '-'; 1-63 characters)."""
    return _check("migration id", value, _LABEL, _LABEL_HINT)


def check_namespace(value: object) -> str:
    return _check("namespace", value, _LABEL, _LABEL_HINT)


def check_pod_name(value: object) -> str:
    """A pod name: a DNS subdomain (1-253 of [a-z0-9.-], no '..')."""
    return _check("pod name", value, _SUBDOMAIN, _SUBDOMAIN_HINT)


def check_node_name(value: object) -> str:
    return _check("node name", value, _SUBDOMAIN, _SUBDOMAIN_HINT)


def check_uid(value: object) -> str:
    return _check("uid", value, _UID, "use 1-128 of [A-Za-z0-9-], alphanumeric at both ends")


def check_pod_ref(value: object) -> tuple[str, str]:
    """"namespace/name" -> (namespace, name)."""
    if not isinstance(value, str) or value.count("/") != 1:
        shown = repr(value)[:80]
        raise ApiError(400, "invalid_identifier", f"invalid pod {shown}: use namespace/name")
    ns, name = value.split("/")
    return check_namespace(ns), check_pod_name(name)


def check_agent_url(value: object, field: str) -> str:
    """An agent base URL: http(s)://host[:port][/prefix], no query, fragment or credentials."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise ApiError(400, "bad_request", f"{field} must be an http(s) URL")
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"{field} is not a valid URL: {exc}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username is not None
        or any(c.isspace() for c in value)
    ):
        raise ApiError(400, "bad_request", f"{field} must be http(s)://host[:port][/path]")
    return value
