"""Snapshot facts source: a `kubectl get ... -o yaml|json` List plus one ClusterInfo object.

The file may be YAML or JSON, one List or many documents. Problems are reported as
located diagnostics (positions are looked up only when there is something to report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.core.yamlsrc import (
    first_byte,
    gc_paused,
    load_fast,
    locate_in_file,
    read_bytes,
)
from livepolicy.facts.kubeobjects import build_facts
from livepolicy.facts.kubetyped import typed_facts
from livepolicy.facts.model import ClusterFacts


def items_of(data: Any, report: Any) -> list[Any]:
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        return list(data["items"])
    if isinstance(data, dict) and data.get("kind") and data.get("kind") != "List":
        return [data]
    if isinstance(data, list):
        return data
    report("", "a snapshot must be a Kubernetes List (kind: List with items) or a list "
               "of objects")
    return []


class SnapshotSource:
    """`FactsSource` reading a snapshot file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> ClusterFacts:
        problems: list[tuple[str, str]] = []

        def report(pointer: str, message: str) -> None:
            problems.append((pointer, message))

        # Millions of small objects and no cycles: the cyclic collector would rescan them all
        # (seconds at 150k pods) between parsing and building, so it stays off throughout.
        with gc_paused():
            raw = read_bytes(self.path)
            if first_byte(raw) == b"":  # else it would read as a cluster with nothing to do
                raise DiagnosticError([Diagnostic(str(self.path), "the snapshot file is empty",
                                                  "", 1, 1)])
            if first_byte(raw) == b"{":  # JSON: the typed decoder, when the input fits it
                typed = typed_facts(raw, str(self.path))
                if typed is not None:
                    return typed
            data = load_fast(self.path, raw=raw)
            del raw
            items = items_of(data, report)
            base = "/items" if isinstance(data, dict) and "items" in data else ""
            facts = build_facts(items, report, base=base, source=str(self.path))
            del data, items
        if problems:
            shown = problems[:200]
            places = locate_in_file(self.path, [p for p, _ in shown])
            diags = [Diagnostic(str(self.path), message, pointer, line, col)
                     for (pointer, message), (line, col) in zip(shown, places, strict=True)]
            if len(problems) > 200:
                diags.append(Diagnostic(str(self.path),
                                        f"... and {len(problems) - 200} more problems", None))
            raise DiagnosticError(diags)
        return facts
