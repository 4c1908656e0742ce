"""`validate`, `fmt`, `schema` and `rules`: work on policies before any cluster is read."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import click

from livepolicy.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    diagnostics_exit,
    fail,
    json_option,
    load_policies,
    no_color_option,
    print_json,
)
from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.policy.fmt import format_text
from livepolicy.policy.load import policy_files
from livepolicy.policy.schema import render as render_schema
from livepolicy.policy.schema import schemas, write_schemas
from livepolicy.rules.docs import rules_markdown
from livepolicy.rules.registry import ALL_RULES


@click.command()
@no_color_option
@click.argument("directory", default="policies", required=False)
@json_option
def validate(directory: str, as_json: bool) -> None:
    """Check policies: every problem at once, as file:line:col: message (at /pointer)."""
    with diagnostics_exit(as_json):
        ps = load_policies(directory)
    if as_json:
        print_json({"valid": True, "diagnostics": [], "templates": sorted(ps.templates),
                    "policies": sorted(ps.policies), "files": list(ps.files)})
    else:
        click.echo(f"Success! {len(ps.files)} file(s): {len(ps.templates)} NodeTemplate(s), "
                   f"{len(ps.policies)} MigrationPolicy(s) are valid.")


@click.command()
@no_color_option
@click.argument("directory", default="policies", required=False)
@click.option("--check", is_flag=True, help="Only report files that are not canonical; exit 1.")
@click.option("--diff", "show_diff", is_flag=True, help="Print the changes as a diff.")
def fmt(directory: str, check: bool, show_diff: bool) -> None:
    """Rewrite policy files canonically, keeping comments."""
    files, diags = policy_files(Path(directory))
    if diags:
        fail(diags)
    changed = []
    problems: list[Diagnostic] = []
    for path in files:
        if path.suffix == ".json":
            continue
        before = path.read_text(encoding="utf-8")
        try:
            after = format_text(before)
        except Exception as exc:  # ruamel raises many types; report, never crash
            problems.append(Diagnostic(str(path), f"cannot format: {exc}".splitlines()[0], None))
            continue
        if after != before:
            changed.append(str(path))
            if show_diff:
                sys.stdout.writelines(difflib.unified_diff(
                    before.splitlines(True), after.splitlines(True), str(path), str(path)))
            if not check:
                path.write_text(after, encoding="utf-8")
    if problems:
        fail(problems)
    for name in changed:
        click.echo(name)
    sys.exit(EXIT_ERROR if check and changed else EXIT_OK)


@click.command()
@no_color_option
@click.option("--out", "out", default="schemas", show_default=True,
              help="Directory to write the JSON Schemas to.")
@click.option("--check", is_flag=True, help="Exit 1 when the files in --out are out of date.")
def schema(out: str, check: bool) -> None:
    """Write the JSON Schemas of the policy kinds (for editors and CI)."""
    if check:
        stale = [name for name, s in schemas().items()
                 if not (Path(out) / name).is_file()
                 or (Path(out) / name).read_text(encoding="utf-8") != render_schema(s)]
        if stale:
            with diagnostics_exit():
                raise DiagnosticError([Diagnostic(str(Path(out) / n), "schema is out of date; "
                                                  "run `livepolicy schema`", None) for n in stale])
        click.echo("Schemas are up to date.")
        return
    for path in write_schemas(Path(out)):
        click.echo(str(path))


@click.command(name="rules")
@no_color_option
@click.option("--markdown", is_flag=True, help="Print the rule reference (docs/rules.md).")
@json_option
def rules_cmd(markdown: bool, as_json: bool) -> None:
    """List every rule with its code, scope and severity."""
    if markdown:
        sys.stdout.write(rules_markdown())
    elif as_json:
        print_json([{"code": r.code, "name": r.name, "scope": r.scope.value,
                     "severity": r.severity.value, "summary": r.summary()} for r in ALL_RULES])
    else:
        for r in ALL_RULES:
            click.echo(f"{r.code:7} {r.severity.value:6} {r.scope.value:16} {r.name}: "
                       f"{r.summary()}")
