"""The string formats of policies have one source: the regexes in livepolicy.policy.formats.

The schemas carry exactly those patterns, and each pattern accepts exactly what the
parser the planner uses accepts (property tests over the characters that matter).
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from livepolicy.core.quantity import parse_bandwidth, parse_duration_ms
from livepolicy.policy import formats
from livepolicy.policy.models import ARCHITECTURES
from livepolicy.rules.template_architecture import ARCHITECTURES as TPL001_ARCHITECTURES
from tests.conftest import ROOT

PATTERNS = {v for k, v in vars(formats).items() if k.isupper() and isinstance(v, str)}


def walk(node: Any, key: str) -> list[Any]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == key] + [
            x for v in node.values() for x in walk(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in walk(v, key)]
    return []


def test_every_schema_pattern_is_one_of_the_formats() -> None:
    found = set()
    for path in (ROOT / "schemas").glob("*.json"):
        if path.name == "events.schema.json":
            continue
        found |= set(walk(json.loads(path.read_text()), "pattern"))
    assert found == PATTERNS, found ^ PATTERNS


def test_patterns_keep_to_what_every_regex_engine_reads_alike() -> None:
    for p in PATTERNS:
        assert p.startswith("^") and p.endswith("$"), p
        assert "\\d" not in p and "\\s" not in p and "\\w" not in p, p


def test_the_architecture_enum_is_tpl001s() -> None:
    schema = json.loads((ROOT / "schemas" / "nodetemplate.json").read_text())
    arch = schema["$defs"]["NodeTemplateSpec"]["properties"]["architecture"]
    assert tuple(arch["enum"]) == ARCHITECTURES == TPL001_ARCHITECTURES


def parses(parse: Any, text: str) -> bool:
    try:
        parse(text)
    except (ValueError, ArithmeticError):
        return False
    return True


def plain(text: str) -> bool:
    """No surrounding whitespace or non-ASCII digits: what the parsers tolerate beyond
    the policy format."""
    return text == text.strip() and text.isascii()


@given(st.text(alphabet="0123456789.mshd", max_size=12))
def test_duration_pattern_accepts_what_the_parser_reads(text: str) -> None:
    ok = formats.matches(formats.DURATION, text)
    if ok:
        assert parses(parse_duration_ms, text), text
    elif plain(text):
        assert not parses(parse_duration_ms, text), text


@given(st.text(alphabet="0123456789. KMGTibpsB/", max_size=12))
def test_bandwidth_pattern_accepts_what_the_parser_reads(text: str) -> None:
    ok = formats.matches(formats.BANDWIDTH, text)
    if ok:
        assert parses(parse_bandwidth, text), text
    elif plain(text) and " " not in text and not re.search(r"[0-9]ib", text):
        # the parser also reads a bare 'i' ("5ibps"), which the policy format refuses
        assert not parses(parse_bandwidth, text), text


@given(st.integers(-5, 205))
def test_percent_pattern_is_one_to_one_hundred(n: int) -> None:
    assert formats.matches(formats.PERCENT, f"{n}%") == (1 <= n <= 100)
    assert not formats.matches(formats.PERCENT, f"0{n}%")


def test_newline_never_slips_past_an_anchor() -> None:
    assert not formats.matches(formats.DURATION, "5s\n")
    assert not formats.matches(formats.NAME, "web\n")
