"""What every command shares: loading inputs, printing diagnostics, exit codes, output."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson
from rich.console import Console
from rich.text import Text

from livepolicy.cli.sources import enrich_from_aws, read_facts, source_options
from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.core.yamlsrc import gc_paused
from livepolicy.facts.model import ClusterFacts
from livepolicy.planner.plan import make_plan
from livepolicy.planner.serialize import plan_document
from livepolicy.policy.load import PolicySet, load_policy_set
from livepolicy.rules.registry import template_diagnostics

# Terraform's -detailed-exitcode convention.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2

F = TypeVar("F", bound=Callable[..., Any])

class _Consoles:
    """The consoles of the running command (replaced by --no-color)."""

    color = True
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)


def new_console(**kwargs: Any) -> Console:
    """A console that follows --no-color: then not even a terminal's cursor controls (the
    live progress display) are written, only plain lines."""
    if _Consoles.color:
        return Console(**kwargs)
    return Console(color_system=None, force_terminal=False, **kwargs)


def _set_color(ctx: click.Context, param: click.Parameter, no_color: bool) -> bool:
    """--no-color: the consoles of this command emit no escape codes (no colour, no bold);
    set on every command, so a previous in-process command does not leak into the next."""
    _Consoles.color = not no_color
    _Consoles.err = new_console(stderr=True, highlight=False, soft_wrap=True)
    _Consoles.out = new_console(highlight=False, soft_wrap=True)
    return no_color


def no_color_option(f: F) -> F:
    return click.option("--no-color", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_color, help="No colours or other terminal styles "
                        "(as does the NO_COLOR environment variable for colours).")(f)


def fail(diags: list[Diagnostic], as_json: bool = False) -> NoReturn:
    if as_json:
        sys.stdout.write(orjson.dumps({"valid": False, "diagnostics": [
            d.to_json() for d in diags]}, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for d in diags:
            _Consoles.err.print(Text(d.format(), style="red"))
        _Consoles.err.print(Text(f"{len(diags)} problem(s) found.", style="bold red"))
    sys.exit(EXIT_ERROR)


@contextmanager
def diagnostics_exit(as_json: bool = False) -> Iterator[None]:
    """Turn DiagnosticError into located messages and exit 1, never a traceback."""
    try:
        yield
    except DiagnosticError as exc:
        fail(exc.diagnostics, as_json)


def load_policies(path: str) -> PolicySet:
    return load_policy_set(Path(path), checks=(template_diagnostics,))


def load_facts(cluster: str) -> ClusterFacts:
    with gc_paused(keep=True):  # the facts live until the command ends
        return enrich_from_aws(read_facts(cluster), source_options())


def plan_doc(facts: ClusterFacts, ps: PolicySet, now: datetime) -> dict[str, Any]:
    """The plan document; the collector stays off while the planner builds its ~10^6
    small acyclic objects (at 150k pods it would rescan them several times, ~0.6 s)."""
    with gc_paused(keep=True):
        return plan_document(make_plan(facts, ps, now))


def resolve_now(now: str | None, facts: ClusterFacts) -> datetime:
    text = now or facts.info.observed_at
    if text:
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise DiagnosticError([Diagnostic("--now", f"not an RFC 3339 time: {text!r}",
                                              None)]) from exc
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return datetime.now(UTC)


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                     .decode() + "\n")


def print_lines(lines: list[tuple[str, str]]) -> None:
    for style, line in lines:
        _Consoles.out.print(Text(line, style=style or ""))


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"livepolicy.{param.name}"] = value
    return value


def cluster_option(f: F) -> F:
    """--cluster plus the options of live sources (kept in the click context, not passed)."""
    f = click.option("--aws-vpc", expose_value=False, callback=_remember, metavar="VPC",
                     help="With --aws: read every subnet of this VPC.")(f)
    f = click.option("--aws-region", expose_value=False, callback=_remember, metavar="REGION",
                     help="With --aws: the region (default: the boto3 chain).")(f)
    f = click.option("--aws-endpoint", expose_value=False, callback=_remember, metavar="URL",
                     help="With --aws: an EC2 endpoint (tests, private endpoints).")(f)
    f = click.option("--aws/--no-aws", "aws", default=False, expose_value=False,
                     callback=_remember, help="Refresh subnets, their tags and the region "
                     "from EC2 (boto3 credentials chain).")(f)
    f = click.option("--context", expose_value=False, callback=_remember, metavar="NAME",
                     help="kubeconfig context (with --cluster kube).")(f)
    f = click.option("--kubeconfig", expose_value=False, callback=_remember, metavar="FILE",
                     help="kubeconfig file (with --cluster kube; default: the usual chain).")(f)
    return click.option("--cluster", "-c", required=True, metavar="SOURCE",
                        help="Cluster facts: a snapshot file (YAML or JSON), `kube` or "
                             "`lab`.")(f)


def policies_option(f: F) -> F:
    return click.option("--policies", "-p", default="policies", show_default=True,
                        metavar="DIR", help="Directory of policy files.")(f)


def target_option(f: F) -> F:
    """--target (plan, apply): see livepolicy/apply/targets.py."""
    return click.option("--target", multiple=True, metavar="NS/NAME|node/NAME|policy/NAME",
                        help="Only the migrations of this pod, off or onto this node, or of "
                        "this policy (repeatable; as Terraform's -target: for exceptions, "
                        "the output says the plan is targeted).")(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Machine-readable JSON output.")(f)
