"""Which facts source `--cluster` names: `kube`, `lab`, or a snapshot file path.

Sources that talk to the outside world are imported only when asked for, so planning from
a snapshot never loads the Kubernetes client.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.facts.model import ClusterFacts
from livepolicy.facts.snapshot import SnapshotSource
from livepolicy.facts.sources import FactsSource


def _kube(opts: dict[str, Any]) -> FactsSource:
    from livepolicy.facts.kube import KubeSource

    return KubeSource(kubeconfig=opts.get("kubeconfig"), context=opts.get("context"))


def _lab(opts: dict[str, Any]) -> FactsSource:
    from livepolicy.lab.source import LabSource

    return LabSource()


NAMED_SOURCES: dict[str, Callable[[dict[str, Any]], FactsSource]] = {"kube": _kube, "lab": _lab}


def source_options() -> dict[str, Any]:
    """--kubeconfig / --context given to the current command (see common.cluster_option)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {}
    return {k.removeprefix("livepolicy."): v for k, v in ctx.meta.items()
            if k.startswith("livepolicy.")}


def open_source(cluster: str) -> FactsSource:
    factory = NAMED_SOURCES.get(cluster)
    if factory is not None:
        return factory(source_options())
    path = Path(cluster)
    if path.is_file():
        return SnapshotSource(path)
    raise DiagnosticError([Diagnostic(cluster, "no such snapshot file (--cluster takes a "
                                      "snapshot path, `kube` or `lab`)", None)])


def enrich_from_aws(facts: ClusterFacts, opts: dict[str, Any]) -> ClusterFacts:
    """With --aws (or an --aws-endpoint), refresh subnets, tags and region from EC2."""
    if not (opts.get("aws") or opts.get("aws_endpoint")):
        return facts
    from livepolicy.aws import AwsFacts

    aws = AwsFacts(endpoint_url=opts.get("aws_endpoint"), region=opts.get("aws_region"))
    vpc = opts.get("aws_vpc")
    ids = None if vpc else [s.id for s in facts.info.subnets] or None
    return aws.enrich(facts, subnet_ids=ids, vpc_id=vpc)


def read_facts(cluster: str) -> ClusterFacts:
    return open_source(cluster).read()
