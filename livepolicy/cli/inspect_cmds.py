"""`explain` and `graph`: look inside the rules and the compatibility graph."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from livepolicy.cli.common import (
    cluster_option,
    diagnostics_exit,
    json_option,
    load_facts,
    load_policies,
    no_color_option,
    policies_option,
    print_json,
    resolve_now,
)
from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.graph.compat import CompatibilityGraph, build_graph
from livepolicy.graph.export import to_dot, to_json
from livepolicy.graph.svg import to_svg
from livepolicy.planner.explain import explain_nodes, explain_pod
from livepolicy.policy.load import PolicySet
from livepolicy.rules.base import Context


def _graph(cluster: str, policies: str) -> tuple[CompatibilityGraph, PolicySet]:
    ps = load_policies(policies)
    facts = load_facts(cluster)
    return build_graph(Context(facts, ps.settings)), ps


def _print_verdicts(title: str, verdicts: list[dict[str, Any]]) -> None:
    click.echo(f"\n{title}:")
    for v in verdicts:
        mark = "ok " if v["ok"] else {"block": "BLOCK", "warn": "warn ", "info": "info "}.get(
            v["severity"], v["severity"])
        facts = ", ".join(f"{k}={val}" for k, val in v["facts"].items())
        click.echo(f"  {mark:5} {v['code']:6} {v['message']}" + (f"   [{facts}]" if facts else ""))


@click.group()
def explain() -> None:
    """Show every rule's verdict for a pod or a node pair, with the facts it used."""


@explain.command(name="pod")
@no_color_option
@click.argument("pod")
@cluster_option
@policies_option
@json_option
@click.option("--now", help="Evaluate age-based selectors at this RFC 3339 time.")
def explain_pod_cmd(pod: str, cluster: str, policies: str, as_json: bool,
                    now: str | None) -> None:
    """Explain POD (namespace/name)."""
    with diagnostics_exit(as_json):
        graph, ps = _graph(cluster, policies)
        try:
            data = explain_pod(pod, graph, ps, resolve_now(now, graph.ctx.facts))
        except KeyError as exc:
            raise DiagnosticError([Diagnostic(cluster, str(exc.args[0]), None)]) from exc
    if as_json:
        print_json(data)
        return
    click.echo(f"pod {data['pod']} on {data['node'] or '-'} ({data['owner']})")
    click.echo(f"policy: {data['policy'] or '-'}: {data['policy_note']}")
    _print_verdicts("cluster rules", data["cluster"])
    _print_verdicts("source node rules", data["source_node"])
    _print_verdicts("pod rules", data["pod_rules"])
    if "destinations" in data:
        d = data["destinations"]
        click.echo(f"\ndestinations: {d['compatible_nodes']} compatible node(s), "
                   f"{d['accepting_volumes']} accept its volumes"
                   + (f" (e.g. {', '.join(d['examples'])})" if d["examples"] else ""))


@explain.command(name="nodes")
@no_color_option
@click.argument("source")
@click.argument("destination")
@cluster_option
@policies_option
@json_option
def explain_nodes_cmd(source: str, destination: str, cluster: str, policies: str,
                      as_json: bool) -> None:
    """Explain whether a pod may move from SOURCE to DESTINATION."""
    with diagnostics_exit(as_json):
        graph, _ = _graph(cluster, policies)
        try:
            data = explain_nodes(source, destination, graph)
        except KeyError as exc:
            raise DiagnosticError([Diagnostic(cluster, str(exc.args[0]), None)]) from exc
    if as_json:
        print_json(data)
        return
    verdict = "may" if data["edge"] else "may NOT"
    click.echo(f"a pod {verdict} live-migrate from {source} to {destination}")
    _print_verdicts("cluster rules", data["cluster"])
    _print_verdicts(f"source node {source}", data["source_node"])
    _print_verdicts(f"destination node {destination}", data["destination_node"])
    _print_verdicts("pair rules", data["pair"])


@click.command()
@no_color_option
@cluster_option
@policies_option
@click.option("--format", "fmt", type=click.Choice(["dot", "json", "svg"]), default="dot",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE.")
def graph(cluster: str, policies: str, fmt: str, output: str | None) -> None:
    """Export the compatibility graph (classes of interchangeable nodes and their edges)."""
    with diagnostics_exit():
        g, _ = _graph(cluster, policies)
    if fmt == "json":
        import orjson
        text = orjson.dumps(to_json(g), option=orjson.OPT_INDENT_2).decode() + "\n"
    elif fmt == "svg":
        text = to_svg(g)
    else:
        text = to_dot(g)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
