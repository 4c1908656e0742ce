"""The Markdown PR comment says everything the terminal view says that a reviewer must see."""

from __future__ import annotations

import copy
import json
from typing import Any

from livepolicy.render.markdown import render_markdown
from livepolicy.render.text import render
from tests.conftest import ROOT

BASIC_PLAN = ROOT / "tests/cases/basic/plan.json"


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(BASIC_PLAN.read_text())
    return doc


def test_markdown_shows_every_warning_the_terminal_shows() -> None:
    doc = _doc()
    terminal = "\n".join(line for _, line in render(doc))
    md = render_markdown(doc)
    warnings = [(m["pod"], n) for m in doc["migrations"] for n in m["notes"]
                if n["severity"] == "warn"]
    assert warnings, "the basic case must carry an ES001 warning for this test to mean anything"
    for pod, n in warnings:
        assert f"[{n['code']}] {n['message']}" in terminal
        assert f"- :warning: **{n['code']}** `{pod}`: {n['message']}" in md


def test_markdown_notes_are_cut_with_a_note_when_too_long() -> None:
    doc = _doc()
    m0 = doc["migrations"][0]
    many = []
    for i in range(400):
        m = copy.deepcopy(m0)
        m["pod"] = f"shop/web-{i:04d}"
        many.append(m)
    doc["migrations"] = many
    md = render_markdown(doc, max_chars=20_000)
    assert len(md) <= 20_000
    assert "more notes left out to fit a comment" in md
    assert "- :warning: **ES001** `shop/web-0000`" in md


def test_markdown_without_notes_has_no_notes_section() -> None:
    doc = _doc()
    for m in doc["migrations"]:
        m["notes"] = []
    assert "migration note" not in render_markdown(doc)
