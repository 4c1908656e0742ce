"""Markdown view for pull-request comments, cut cleanly below GitHub's 65,536 characters."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from livepolicy.core.quantity import format_bytes, format_duration_ms
from livepolicy.render.text import reasons_text, summary_line

GITHUB_LIMIT = 65_536
_env = Environment(loader=PackageLoader("livepolicy.render", "templates"),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                   autoescape=False)
_env.filters["bytes"] = format_bytes
_env.filters["duration"] = format_duration_ms
_env.filters["reasons"] = reasons_text


def migration_notes(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(pod, note) pairs of every migration, warnings first: what the terminal view prints
    under each migration line, gathered above the tables so a reviewer cannot miss them."""
    pairs = [(m["pod"], n) for m in doc["migrations"] for n in m["notes"]]
    return sorted(pairs, key=lambda p: p[1]["severity"] != "warn")


def render_markdown(doc: dict[str, Any], max_chars: int = GITHUB_LIMIT - 1_000) -> str:
    """Render; when too long, drop rows (never the summary) and say how many were left out."""
    tmpl = _env.get_template("plan.md.j2")
    notes = migration_notes(doc)
    limit = None
    while True:
        text = tmpl.render(doc=doc, summary=summary_line(doc), notes=notes, limit=limit)
        if len(text) <= max_chars:
            return text
        longest = max(len(doc["migrations"]), len(doc["blocked"]), len(doc["labels"]),
                      len(notes))
        limit = (limit if limit is not None else longest) // 2
        if limit == 0:
            return text[:max_chars] + "\n\n> Plan truncated.\n"


def render_apply_report(report: dict[str, Any], max_chars: int = GITHUB_LIMIT - 1_000) -> str:
    """Markdown apply report; rows are cut (with a note) to stay below the comment limit."""
    tmpl = _env.get_template("apply.md.j2")
    limit = None
    while True:
        text = tmpl.render(limit=limit, **report)
        if len(text) <= max_chars:
            return text
        limit = (limit if limit is not None else len(report["outcomes"])) // 2
        if limit == 0:
            return text[:max_chars] + "\n\n> Report truncated.\n"
