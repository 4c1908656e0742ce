"""The string formats policies accept, each one regex shared by validation and the schemas.

The models check a string against the same pattern the JSON Schemas carry, so an editor
using schemas/ rejects exactly the strings `validate` rejects. The patterns keep to the
subset on which Python's `re`, pydantic's Rust engine and ECMA-262 (JSON Schema) agree:
ASCII classes (`[0-9]`, never `\\d`, which is Unicode in Python and Rust), `^...$`
anchors, and Python matches them with `fullmatch` (its `$` also matches before a
trailing newline).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

from livepolicy.core.quantity import parse_bandwidth, parse_duration_ms

# A run of number+unit pairs, as core.quantity.parse_duration_ms reads them ("1h30m").
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|h|m|s|d))+$"
# A number, optional spaces, a decimal or binary prefix, bits or bytes per second.
BANDWIDTH = r"^[0-9]+(\.[0-9]+)?[ ]*([KMGT]i?)?(bps|Bps|B/s)$"
# 1% to 100%, no leading zeros.
PERCENT = r"^(100|[1-9][0-9]?)%$"
# A DNS-style object name (metadata.name).
NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
# A version such as 2, 2.0 or 1.7.3 (containerd), or exactly major.minor (Kubernetes).
VERSION = r"^[0-9]+(\.[0-9]+){0,2}$"
MAJOR_MINOR = r"^[0-9]+\.[0-9]+$"
# The value of a Gt/Lt selector expression.
INTEGER = r"^-?[0-9]+$"
# Five fields of a cron expression; what each field may hold is croniter's to say.
CRON_FIELDS = r"^[ \t]*[^ \t]+([ \t]+[^ \t]+){4}[ \t]*$"


def matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def _duration(v: str) -> str:
    if not matches(DURATION, v):
        raise ValueError(f"not a duration: {v!r} (use e.g. 300ms, 45s, 1h30m, 2d)")
    parse_duration_ms(v)  # the parser the planner uses must agree
    return v


def _bandwidth(v: str) -> str:
    if not matches(BANDWIDTH, v):
        raise ValueError(f"not a bandwidth: {v!r} (use e.g. 1Gbps, 500Mbps, 100MiB/s)")
    parse_bandwidth(v)
    return v


def _name(v: str) -> str:
    if not matches(NAME, v):
        raise ValueError(f"name {v!r} must be lowercase letters, digits, '-' or '.', "
                         "starting and ending with a letter or digit")
    return v


def _string(pattern: str, **extra: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, **extra})


Duration = Annotated[str, AfterValidator(_duration),
                     _string(DURATION, examples=["300ms", "45s", "1h30m", "2d"])]
Bandwidth = Annotated[str, AfterValidator(_bandwidth),
                      _string(BANDWIDTH, examples=["1Gbps", "500Mbps", "100MiB/s"])]
Name = Annotated[str, AfterValidator(_name), _string(NAME)]
