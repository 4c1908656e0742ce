"""The rule vocabulary: scopes, severities, verdicts and the base classes every rule extends.

A rule is a small class with a stable code, a severity and a docstring (which becomes its
entry in docs/rules.md). Its `check` returns a Verdict whether it passes or not, so
`livepolicy explain` can show every decision with the facts behind it.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from livepolicy.facts.model import ClusterFacts, NodeFacts, PodFacts
from livepolicy.policy.models import DEFAULT_SETTINGS, Allow, NodeTemplate, SettingsSpec


class Severity(StrEnum):
    BLOCK = "block"
    WARN = "warn"
    INFO = "info"
    ERROR = "error"  # policy validation errors (template rules)


class Scope(StrEnum):
    CLUSTER = "cluster"
    NODE = "node"
    PAIR = "pair"
    POD = "pod"
    POD_NODE = "pod-destination"
    TEMPLATE = "template"


@dataclass(frozen=True, slots=True)
class Verdict:
    code: str
    severity: Severity
    ok: bool
    message: str
    facts: Mapping[str, object] = field(default_factory=dict)  # rendered by to_json

    @property
    def blocks(self) -> bool:
        return not self.ok and self.severity is Severity.BLOCK

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "severity": self.severity.value, "ok": self.ok,
                "message": self.message, "facts": {k: _fact(v) for k, v in self.facts.items()}}


@dataclass(frozen=True)
class Context:
    """What every check may read besides its subject: settings and the cluster's facts."""

    facts: ClusterFacts
    settings: SettingsSpec = DEFAULT_SETTINGS


class Rule:
    code: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity]
    scope: ClassVar[Scope]

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]

    @classmethod
    def description(cls) -> str:
        lines = (cls.__doc__ or "").strip().splitlines()[1:]
        return "\n".join(line.strip() for line in lines).strip()

    def verdict(self, ok: bool, message: str, severity: Severity | None = None,
                **facts: object) -> Verdict:
        # Facts stay raw until shown: planning 150k pods builds many verdicts nobody prints.
        return Verdict(self.code, severity or self.severity, ok, message, facts)


def _fact(v: object) -> str:
    if isinstance(v, frozenset | set | tuple | list):
        return ",".join(sorted(str(x) for x in v))
    return str(v)


class ClusterRule(Rule):
    scope = Scope.CLUSTER

    def check(self, ctx: Context) -> Verdict:
        raise NotImplementedError


class NodeRule(Rule):
    """Applies to every node, as source and as destination."""

    scope = Scope.NODE

    def check(self, node: NodeFacts, ctx: Context) -> Verdict:
        raise NotImplementedError


class PairRule(Rule):
    """Source -> destination compatibility.

    `key` must capture everything `check` reads from a node, so nodes with equal keys are
    interchangeable: that lets the graph evaluate classes of nodes instead of all pairs.
    """

    scope = Scope.PAIR

    def key(self, node: NodeFacts, ctx: Context) -> Hashable:
        raise NotImplementedError

    def check(self, src: NodeFacts, dst: NodeFacts, ctx: Context) -> Verdict:
        raise NotImplementedError


class PodRule(Rule):
    """A rule about one pod. `blocks` is the cheap predicate the label assessment runs on
    every pod of the cluster; `check` explains. A test keeps the two in agreement."""

    scope = Scope.POD

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        raise NotImplementedError

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return self.check(pod, ctx, allow).blocks


class PodNodeRule(Rule):
    """A pod's own constraint on a destination (e.g. its volumes' zone).

    It may read only the destination's zone: the label assessment tries one destination
    per zone (CompatibilityGraph.zone_representatives) instead of every node.
    """

    scope = Scope.POD_NODE

    def relevant(self, pod: PodFacts) -> bool:
        """Cheap pre-filter: most pods have nothing to say about destinations."""
        return True

    def check(self, pod: PodFacts, src: NodeFacts, dst: NodeFacts, ctx: Context) -> Verdict:
        raise NotImplementedError


@dataclass(frozen=True)
class TemplateProblem:
    pointer: str
    message: str


class TemplateRule(Rule):
    """Validation of a NodeTemplate before any cluster is read."""

    scope = Scope.TEMPLATE
    severity = Severity.ERROR

    def check(self, template: NodeTemplate, settings: SettingsSpec) -> list[TemplateProblem]:
        raise NotImplementedError


_VERSION = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def version_tuple(text: str) -> tuple[int, int, int] | None:
    """"v1.31.4-eks-1b2c" -> (1, 31, 4); None when there is no version in the text."""
    m = _VERSION.match(text.strip())
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0))
