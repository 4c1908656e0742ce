"""Kubernetes label-selector and node-selector semantics, shared by policies and placement.

Implemented once here so the planner and the rules agree with the scheduler on what
"matches" means (In, NotIn, Exists, DoesNotExist, Gt, Lt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist | Gt | Lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        present = self.key in labels
        if op == "Exists":
            return present
        if op == "DoesNotExist":
            return not present
        if op == "In":
            return present and labels[self.key] in self.values
        if op == "NotIn":
            return not present or labels[self.key] not in self.values
        if op in ("Gt", "Lt"):
            if not present or len(self.values) != 1:
                return False
            try:
                have, want = int(labels[self.key]), int(self.values[0])
            except ValueError:
                return False
            return have > want if op == "Gt" else have < want
        return False


@dataclass(frozen=True, slots=True)
class Selector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    @classmethod
    def from_labels(cls, match_labels: Mapping[str, str]) -> Selector:
        return cls(tuple(Requirement(k, "In", (v,)) for k, v in sorted(match_labels.items())))

    @classmethod
    def from_k8s(cls, raw: Mapping[str, object] | None) -> Selector:
        """Build from a metav1.LabelSelector-shaped mapping (matchLabels + matchExpressions)."""
        if not raw:
            return cls()
        reqs: list[Requirement] = []
        match_labels = raw.get("matchLabels") or {}
        if isinstance(match_labels, Mapping):
            reqs.extend(Requirement(str(k), "In", (str(v),))
                        for k, v in sorted(match_labels.items()))
        exprs = raw.get("matchExpressions") or []
        if isinstance(exprs, Sequence):
            for e in exprs:
                if isinstance(e, Mapping):
                    values = e.get("values") or []
                    reqs.append(Requirement(str(e.get("key", "")), str(e.get("operator", "")),
                                            tuple(str(v) for v in values)))
        return cls(tuple(reqs))

    def describe(self) -> str:
        parts = []
        for r in self.requirements:
            if r.operator == "In" and len(r.values) == 1:
                parts.append(f"{r.key}={r.values[0]}")
            elif r.operator in ("Exists", "DoesNotExist"):
                parts.append(("" if r.operator == "Exists" else "!") + r.key)
            else:
                parts.append(f"{r.key} {r.operator} ({','.join(r.values)})")
        return ",".join(parts) or "<all>"


@dataclass(frozen=True, slots=True)
class NodeSelectorTerms:
    """Required node affinity: OR of terms, each an AND of label and field requirements."""

    terms: tuple[tuple[Selector, Selector], ...] = ()  # (label selector, field selector)

    def matches(self, labels: Mapping[str, str], node_name: str) -> bool:
        if not self.terms:
            return True
        fields = {"metadata.name": node_name}
        return any(lab.matches(labels) and fld.matches(fields) for lab, fld in self.terms
                   if not (lab.empty and fld.empty))
