"""`snapshot` and `label`: the commands that talk to a live cluster (`--cluster kube`).

The label reconciliation itself lives in `livepolicy.controller.reconcile`, shared with
the in-cluster controller; this module only parses options and prints outcomes.

The Kubernetes client is imported only when one of them runs (it takes ~0.4 s to load),
so every other command starts as fast as before.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from livepolicy.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    cluster_option,
    diagnostics_exit,
    json_option,
    load_policies,
    no_color_option,
    policies_option,
    print_json,
    print_lines,
)
from livepolicy.cli.sources import open_source
from livepolicy.core.diagnostics import Diagnostic, DiagnosticError

if TYPE_CHECKING:
    from livepolicy.facts.kube import KubeSource
    from livepolicy.kube.labels import LabelOutcome


def _kube_source(cluster: str, command: str) -> KubeSource:
    from livepolicy.facts.kube import KubeSource

    source = open_source(cluster)
    if not isinstance(source, KubeSource):
        raise DiagnosticError([Diagnostic("--cluster", f"`livepolicy {command}` works on a "
                                          "live cluster: use --cluster kube", None)])
    return source


def dump_snapshot(doc: Mapping[str, Any], fmt: str) -> bytes:
    """JSON, or block-style YAML like kubectl's (see `to_yaml`)."""
    if fmt == "json":
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    return to_yaml(doc).encode()


_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9._/-]*")
# Plain scalars that some YAML loader (1.1 or 1.2) would not read back as strings.
_RESERVED = frozenset({"true", "false", "yes", "no", "on", "off", "y", "n", "null"})
_YAML_BREAKS = str.maketrans({"\u0085": "\\N", "\u2028": "\\L", "\u2029": "\\P",
                              "\ufeff": "\\ufeff"})


def _scalar(v: Any) -> str:
    if isinstance(v, str):
        if _PLAIN.fullmatch(v) and v.lower() not in _RESERVED:
            return v
        # A JSON string is a YAML double-quoted scalar, read back alike by YAML 1.1 and
        # 1.2 loaders; YAML also breaks lines at NEL/LS/PS, which JSON leaves raw.
        return orjson.dumps(v).decode().translate(_YAML_BREAKS)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return orjson.dumps(v).decode()


def _lines(v: dict[str, Any] | list[Any], indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(v, dict):
        for k, x in v.items():
            if isinstance(x, dict | list) and x:
                out.append(f"{pad}{_scalar(str(k))}:")
                # kubectl style: a list sits at its key's indentation, a map 2 deeper.
                _lines(x, indent if isinstance(x, list) else indent + 2, out)
            else:
                out.append(f"{pad}{_scalar(str(k))}: {_scalar(x)}")
        return
    for x in v:
        if isinstance(x, dict | list) and x:
            start = len(out)
            _lines(x, indent + 2, out)
            out[start] = f"{pad}- {out[start][indent + 2:]}"
        else:
            out.append(f"{pad}- {_scalar(x)}")


def to_yaml(doc: Mapping[str, Any]) -> str:
    """Block-style YAML of JSON-like data, shaped like `kubectl get -o yaml`.

    Written directly rather than through a YAML library: the pure-Python emitter takes
    seconds per thousand objects. Strings stay plain only when no loader can misread them
    (`app.kubernetes.io/name`, `Running`); everything else is a JSON-quoted string.
    """
    out: list[str] = []
    _lines(dict(doc), 0, out)
    out.append("")
    return "\n".join(out)


@click.command()
@no_color_option
@cluster_option
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True, help="Output format (JSON is much faster on big clusters).")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False),
              help="Write to FILE instead of standard output.")
def snapshot(cluster: str, fmt: str, output: str | None) -> None:
    """Export a live cluster as a snapshot file that `plan --cluster FILE` reads.

    A v1 List of nodes, pods, PVCs, PVs, PDBs, workloads and ENIConfigs, as
    `kubectl get -o yaml` prints them (without managedFields), plus the ClusterInfo.
    """
    with diagnostics_exit():
        source = _kube_source(cluster, "snapshot")
        data = dump_snapshot(source.snapshot(), fmt)
        if output:
            path = Path(output)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                tmp.write_bytes(data)
                tmp.replace(path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise DiagnosticError([Diagnostic(output, f"cannot write the snapshot: "
                                                  f"{exc.strerror or exc}", None)]) from None
    if output:
        r = source.report
        click.echo(f"Wrote {path}: {r.counts.get('Node', 0)} nodes, "
                   f"{r.counts.get('Pod', 0)} pods.", err=True)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


@click.command()
@no_color_option
@cluster_option
@policies_option
@json_option
@click.option("--dry-run", is_flag=True,
              help="Have the API server check every change without saving it (dryRun=All).")
@click.option("--parallelism", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Label writes in flight at once.")
def label(cluster: str, policies: str, as_json: bool, dry_run: bool, parallelism: int
          ) -> None:
    """Make the migration-enabled pod label true exactly where the rules allow it.

    Adds the label where a pod could live-migrate now and removes it where it no longer
    can. Each write carries the pod's resourceVersion; a pod changed meanwhile is read
    again, re-evaluated and retried. Running it twice changes nothing the second time.
    """
    from livepolicy.controller.reconcile import reconcile_labels, summarise

    with diagnostics_exit(as_json):
        source = _kube_source(cluster, "label")
        outcomes = reconcile_labels(source, load_policies(policies), dry_run=dry_run,
                                    parallelism=parallelism)
    failed = [o for o in outcomes if not o.ok]
    if as_json:
        print_json({"dry_run": dry_run, "summary": summarise(outcomes),
                    "changes": [o.to_json() for o in outcomes]})
    else:
        print_lines(render_outcomes(outcomes, dry_run))
    sys.exit(EXIT_ERROR if failed else EXIT_OK)


def render_outcomes(outcomes: list[LabelOutcome], dry_run: bool) -> list[tuple[str, str]]:
    from livepolicy.controller.reconcile import summarise

    lines: list[tuple[str, str]] = []
    for o in outcomes:
        e = o.edit
        sign, style = ("+", "green") if e.action == "add" else ("-", "red")
        text = f"{e.key}={e.value}" if e.value is not None else e.key
        if o.result in ("applied", "would-apply"):
            note = f"  (after {o.conflicts} conflict(s))" if o.conflicts else ""
            lines.append((style, f"  {sign} {e.pod}  {text}{note}"))
        elif o.result == "failed":
            lines.append(("bold red", f"  ! {e.pod}  {text}: {o.message}"))
        else:
            lines.append(("dim", f"  = {e.pod}  {text}: {o.message}"))
    s = summarise(outcomes)
    if not outcomes:
        lines.append(("", "Labels are up to date: nothing to change."))
        return lines
    verb = "Would change" if dry_run else "Changed"
    summary = (f"{verb} labels: {s['add']} added, {s['remove']} removed, {s['failed']} "
               f"failed")
    extra = [f"{s['conflicts']} conflict(s) retried"] if s["conflicts"] else []
    if s["not_needed"] or s["gone"]:
        extra.append(f"{s['not_needed'] + s['gone']} dropped after re-reading")
    if extra:
        summary += f" ({', '.join(extra)})"
    lines.append(("bold", summary + "."))
    if dry_run:
        lines.append(("dim", "Dry run: the API server checked every change; nothing was "
                             "saved."))
    return lines
