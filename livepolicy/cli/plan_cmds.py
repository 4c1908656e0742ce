"""`plan` and `show`: compute, print and save plans."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from livepolicy.apply.targets import parse_targets, restrict, targeted_warning, unmatched
from livepolicy.cli.common import (
    EXIT_CHANGES,
    EXIT_OK,
    cluster_option,
    diagnostics_exit,
    json_option,
    load_facts,
    load_policies,
    no_color_option,
    plan_doc,
    policies_option,
    print_json,
    print_lines,
    resolve_now,
    target_option,
)
from livepolicy.planner.serialize import dumps, read_plan
from livepolicy.render.markdown import render_markdown
from livepolicy.render.text import render


@click.command()
@cluster_option
@policies_option
@json_option
@no_color_option
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Save the plan to FILE.")
@click.option("--markdown", "markdown", type=click.Path(dir_okay=False),
              help="Also write a Markdown summary fit for a pull-request comment.")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 when nothing changes, 2 when the plan has changes, 1 on error.")
@click.option("--now", help="Evaluate age-based selectors at this RFC 3339 time.")
@click.option("--limit", default=0, type=int, help="Rows per section in the terminal (0: all).")
@target_option
def plan(cluster: str, policies: str, as_json: bool, out: str | None, markdown: str | None,
         detailed_exitcode: bool, now: str | None, limit: int, target: tuple[str, ...]
         ) -> None:
    """Compute which pods would live-migrate where, and which cannot and why."""
    with diagnostics_exit(as_json):
        targets = parse_targets(target)
        ps = load_policies(policies)
        facts = load_facts(cluster)
        doc = plan_doc(facts, ps, resolve_now(now, facts))
        if targets:
            for t in unmatched(doc, targets):
                click.echo(f"Warning: --target {t} matches no planned migration.", err=True)
            doc = restrict(doc, targets)
    if out:
        Path(out).write_bytes(dumps(doc))
    if markdown:
        Path(markdown).write_text(markdown_view(doc), encoding="utf-8")
    if as_json:
        sys.stdout.buffer.write(dumps(doc))
    else:
        print_lines(terminal_view(doc, limit))
        if out:
            print_lines([("", f"\nSaved the plan to {out}. To apply it: livepolicy apply {out}")])
    changes = doc["summary"]["migrations"] or doc["summary"]["labels_add"] or \
        doc["summary"]["labels_remove"]
    sys.exit(EXIT_CHANGES if detailed_exitcode and changes else EXIT_OK)


@click.command()
@click.argument("planfile", type=click.Path(exists=True, dir_okay=False))
@json_option
@no_color_option
@click.option("--markdown", is_flag=True, help="Print the Markdown (pull-request) view.")
def show(planfile: str, as_json: bool, markdown: bool) -> None:
    """Print a saved plan."""
    with diagnostics_exit(as_json):
        doc = read_plan(Path(planfile))
    if as_json:
        print_json(doc)
    elif markdown:
        sys.stdout.write(markdown_view(doc))
    else:
        print_lines(terminal_view(doc))


def terminal_view(doc: dict[str, Any], limit: int = 0) -> list[tuple[str, str]]:
    """The plan's terminal lines; a targeted plan says so under its first line."""
    lines = render(doc, limit)
    warning = targeted_warning(doc)
    return [*lines[:1], ("yellow", warning), *lines[1:]] if warning else lines


def markdown_view(doc: dict[str, Any]) -> str:
    warning = targeted_warning(doc)
    return (f"> **{warning}**\n\n" if warning else "") + render_markdown(doc)
