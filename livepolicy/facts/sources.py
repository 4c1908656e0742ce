"""Pick a facts source from the `--cluster` argument (a snapshot path today)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.facts.model import ClusterFacts
from livepolicy.facts.snapshot import SnapshotSource


class FactsSource(Protocol):
    def read(self) -> ClusterFacts: ...


def open_source(cluster: str) -> FactsSource:
    path = Path(cluster)
    if path.is_file():
        return SnapshotSource(path)
    raise DiagnosticError([Diagnostic(cluster, "no such snapshot file (--cluster takes a "
                                      "snapshot path)", None)])
