"""Entry point: the command group and its subcommands."""

from __future__ import annotations

import click

from livepolicy import __version__
from livepolicy.cli.apply_cmds import agent, apply, force_unlock_cmd
from livepolicy.cli.controller_cmds import controller
from livepolicy.cli.inspect_cmds import explain, graph
from livepolicy.cli.kube_cmds import label, snapshot
from livepolicy.cli.lab_cmds import lab
from livepolicy.cli.plan_cmds import plan, show
from livepolicy.cli.policy_cmds import fmt, rules_cmd, schema, validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="livepolicy")
def cli() -> None:
    """Plan and apply Kubernetes container live migrations from YAML policies."""


for command in (plan, show, apply, validate, fmt, schema, rules_cmd, explain, graph, agent,
                force_unlock_cmd, lab):
    cli.add_command(command)
cli.add_command(snapshot)
cli.add_command(label)
cli.add_command(controller)


def main() -> None:
    cli(prog_name="livepolicy")
