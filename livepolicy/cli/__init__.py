"""The `livepolicy` command line: parse, call a stage, render, exit with Terraform codes."""

from livepolicy.cli.main import main

__all__ = ["main"]
