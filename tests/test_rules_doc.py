"""docs/rules.md is generated from the rule registry and must stay in sync with it."""

from __future__ import annotations

from pathlib import Path

from livepolicy.rules.docs import PLANNER_REASONS, rules_markdown
from livepolicy.rules.registry import ALL_RULES

DOC = Path(__file__).resolve().parent.parent / "docs" / "rules.md"
REGENERATE = "regenerate it with `.venv/bin/livepolicy rules --markdown > docs/rules.md`"


def test_rules_doc_is_generated() -> None:
    assert DOC.read_text() == rules_markdown(), f"docs/rules.md is stale; {REGENERATE}"


def test_every_rule_code_is_documented() -> None:
    text = DOC.read_text()
    missing = [r.code for r in ALL_RULES if f"### {r.code} `{r.name}`" not in text]
    missing += [code for code, *_ in PLANNER_REASONS if f"### {code} " not in text]
    assert not missing, f"docs/rules.md lacks {missing}; {REGENERATE}"


def test_every_rule_has_a_summary() -> None:
    assert all(r.summary() for r in ALL_RULES), "every rule class needs a docstring"
