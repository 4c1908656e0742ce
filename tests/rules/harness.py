"""Load the data-driven rule cases (tests/rules/cases/<CODE>.yaml) and run one through its rule.

A case file is a YAML list of cases. Every case has a `description`, the subject(s) its
rule's scope needs, optional context, and `expect`:

    - description: containerd 1.7 is too old
      node:                         # a Node as kubectl shows it (kind/apiVersion optional)
        status: {nodeInfo: {containerRuntimeVersion: "containerd://1.7.22"}}
      expect: {ok: false, severity: block, message_contains: "older than containerd 2.0"}

Subjects by scope (see livepolicy/rules/base.py):

    cluster rules (CL*)      cluster: <ClusterInfo spec>   (omit it to test "no ClusterInfo")
    node rules (ND*)         node: <Node>
    pair rules (PR*)         source: <Node>, destination: <Node>
    pod rules (WL*)          pod: <Pod>, optional allow: {hostPath: bool, customControllers: bool}
    pod-destination (ST*)    pod: <Pod>, source: <Node>, destination: <Node>
    template rules (TPL*)    template: <NodeTemplate document>

Optional context for every scope: `cluster` (ClusterInfo spec), `objects` (any other
Kubernetes objects: PersistentVolumeClaim, PersistentVolume, ReplicaSet, Job, ENIConfig,
more Nodes, ...) and `settings` (a Settings.spec). A case with `settings` may also give
`expect_default`: the verdict with the default settings, to show what the setting changes.

Files are read as YAML 1.1 (PyYAML): quote versions ("1.30", not 1.30), label values
such as "true", "yes" or "on", and timestamps. YAML anchors (&name / *name) may share
objects between the cases of one file.

Missing names are filled in (node-1, source, destination, pod-1); a pod's `spec.nodeName`
that names no node in the case gets a plain Node of that name.

`expect.ok` is required; `severity` (block | warn | info, or error for template rules) and
`message_contains` (a string or a list of strings, all of which must appear) are checked
when given. For template rules, ok means "no problems", and the message is every problem
as "<pointer>: <message>" joined with "; ".
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from livepolicy.facts.kubeobjects import INFO_API, build_facts
from livepolicy.facts.model import ClusterFacts, NodeFacts, PodFacts
from livepolicy.policy.models import (
    API_VERSION,
    DEFAULT_SETTINGS,
    Allow,
    NodeTemplate,
    SettingsSpec,
)
from livepolicy.rules.base import (
    ClusterRule,
    Context,
    NodeRule,
    PairRule,
    PodNodeRule,
    PodRule,
    Rule,
    Scope,
    TemplateRule,
)
from livepolicy.rules.registry import ALL_RULES

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
CASES_DIR = Path(__file__).resolve().parent / "cases"
RULES: dict[str, Rule] = {r.code: r for r in ALL_RULES}

SUBJECTS: dict[Scope, tuple[str, ...]] = {
    Scope.CLUSTER: (),
    Scope.NODE: ("node",),
    Scope.PAIR: ("source", "destination"),
    Scope.POD: ("pod",),
    Scope.POD_NODE: ("pod", "source", "destination"),
    Scope.TEMPLATE: ("template",),
}
CONTEXT_KEYS = ("cluster", "objects", "settings")
EXPECT_KEYS = frozenset({"ok", "severity", "message_contains"})
SEVERITIES = frozenset({"block", "warn", "info", "error"})
DEFAULT_NAMES = {"node": "node-1", "source": "source", "destination": "destination"}


class CaseError(Exception):
    """A case file that does not follow the format above."""


@dataclass(frozen=True)
class Case:
    code: str
    index: int
    data: Mapping[str, Any]

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    @property
    def description(self) -> str:
        return str(self.data.get("description", f"case {self.index}"))

    @property
    def id(self) -> str:
        return f"{self.code}-{self.description}"

    @property
    def expect(self) -> Mapping[str, Any]:
        return self.data["expect"]  # type: ignore[no-any-return]

    @property
    def expect_default(self) -> Mapping[str, Any] | None:
        return self.data.get("expect_default")

    def __str__(self) -> str:
        return f"{self.code}.yaml case {self.index} ({self.description!r})"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    severity: str
    message: str


# ------------------------------------------------------------------ loading and validation

@cache
def load_cases(code: str) -> tuple[Case, ...]:
    path = CASES_DIR / f"{code}.yaml"
    data = yaml.load(path.read_text(), Loader=_LOADER)
    if not isinstance(data, list):
        raise CaseError(f"{path.name}: expected a YAML list of cases")
    return tuple(Case(code, i, c if isinstance(c, dict) else {"_invalid": c})
                 for i, c in enumerate(data))


def case_codes() -> list[str]:
    return sorted(p.stem for p in CASES_DIR.glob("*.yaml"))


def all_cases() -> list[Case]:
    return [c for code in case_codes() if code in RULES for c in load_cases(code)]


def validate(case: Case) -> None:
    """Raise CaseError with a readable reason when a case is malformed."""
    d = case.data
    if "_invalid" in d:
        raise CaseError(f"{case}: a case must be a mapping")
    if not isinstance(d.get("description"), str) or not d["description"].strip():
        raise CaseError(f"{case}: needs a non-empty 'description'")
    scope = case.rule.scope
    subjects = SUBJECTS[scope]
    allowed = {"description", "expect", "expect_default", *CONTEXT_KEYS, *subjects}
    if scope is Scope.POD:
        allowed.add("allow")
    if scope is Scope.TEMPLATE:
        allowed -= {"cluster", "objects"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise CaseError(f"{case}: unknown key(s) {unknown}; a {scope.value} case may have "
                        f"{sorted(allowed)}")
    missing = [s for s in subjects if not isinstance(d.get(s), dict)]
    if missing:
        raise CaseError(f"{case}: a {scope.value} rule needs {missing} (mappings)")
    if "objects" in d and not isinstance(d["objects"], list):
        raise CaseError(f"{case}: 'objects' must be a list of Kubernetes objects")
    for key in ("cluster", "settings", "allow"):
        if key in d and not isinstance(d[key], dict):
            raise CaseError(f"{case}: '{key}' must be a mapping")
    _validate_expect(case, "expect", d.get("expect"))
    if "expect_default" in d:
        if "settings" not in d:
            raise CaseError(f"{case}: 'expect_default' only makes sense with 'settings'")
        _validate_expect(case, "expect_default", d["expect_default"])


def _validate_expect(case: Case, key: str, e: Any) -> None:
    if not isinstance(e, dict) or not isinstance(e.get("ok"), bool):
        raise CaseError(f"{case}: '{key}' must be a mapping with ok: true|false")
    unknown = sorted(set(e) - EXPECT_KEYS)
    if unknown:
        raise CaseError(f"{case}: unknown key(s) {unknown} in '{key}' "
                        f"(allowed: {sorted(EXPECT_KEYS)})")
    if "severity" in e and e["severity"] not in SEVERITIES:
        raise CaseError(f"{case}: {key}.severity must be one of {sorted(SEVERITIES)}")
    mc = e.get("message_contains")
    if mc is not None and not (isinstance(mc, str) or (
            isinstance(mc, list) and all(isinstance(x, str) for x in mc))):
        raise CaseError(f"{case}: {key}.message_contains must be a string or a list of "
                        "strings")


# ------------------------------------------------------------------ building the subjects

def _object(raw: Mapping[str, Any], kind: str, name: str) -> dict[str, Any]:
    obj = copy.deepcopy(dict(raw))
    obj.setdefault("apiVersion", "v1")
    obj.setdefault("kind", kind)
    meta = obj.setdefault("metadata", {})
    meta.setdefault("name", name)
    return obj


def cluster_items(d: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The Kubernetes objects of a case, and the node name of each subject key."""
    items: list[dict[str, Any]] = []
    if "cluster" in d:
        items.append({"apiVersion": INFO_API, "kind": "ClusterInfo",
                      "metadata": {"name": "test"}, "spec": copy.deepcopy(d["cluster"])})
    items += [copy.deepcopy(o) for o in d.get("objects", [])]
    names: dict[str, str] = {}
    for key in ("node", "source", "destination"):
        if key in d:
            obj = _object(d[key], "Node", DEFAULT_NAMES[key])
            names[key] = obj["metadata"]["name"]
            items.append(obj)
    if "pod" in d:
        pod = _object(d["pod"], "Pod", "pod-1")
        pod["metadata"].setdefault("namespace", "default")
        names["pod"] = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        node = pod.get("spec", {}).get("nodeName")
        known = {o.get("metadata", {}).get("name") for o in items if o.get("kind") == "Node"}
        if node and node not in known:
            items.append(_object({}, "Node", node))
        items.append(pod)
    return items, names


def facts_of(items: list[dict[str, Any]]) -> ClusterFacts:
    problems: list[tuple[str, str]] = []
    facts = build_facts(items, lambda p, m: problems.append((p, m)))
    if problems:
        raise CaseError(f"the case's objects have problems: {problems}")
    return facts


def settings_of(d: Mapping[str, Any], use_case_settings: bool = True) -> SettingsSpec:
    if use_case_settings and "settings" in d:
        return SettingsSpec.model_validate(d["settings"])
    return DEFAULT_SETTINGS


def template_of(raw: Mapping[str, Any]) -> NodeTemplate:
    doc = copy.deepcopy(dict(raw))
    doc.setdefault("apiVersion", API_VERSION)
    doc.setdefault("kind", "NodeTemplate")
    doc.setdefault("metadata", {"name": "test"})
    return NodeTemplate.model_validate(doc)


@dataclass(frozen=True)
class Subjects:
    facts: ClusterFacts
    nodes: dict[str, NodeFacts]
    pod: PodFacts | None


def subjects_of(d: Mapping[str, Any]) -> Subjects:
    items, names = cluster_items(d)
    facts = facts_of(items)
    nodes = {k: facts.node_by_name[n] for k, n in names.items() if k != "pod"}
    pod = facts.pod_by_key[names["pod"]] if "pod" in names else None
    return Subjects(facts, nodes, pod)


# ------------------------------------------------------------------ running a case

def run(case: Case, use_case_settings: bool = True) -> Outcome:
    """Run the case's rule on its subjects with the case's (or the default) settings."""
    d = case.data
    rule = case.rule
    settings = settings_of(d, use_case_settings)
    if isinstance(rule, TemplateRule):
        problems = rule.check(template_of(d["template"]), settings)
        return Outcome(not problems, rule.severity.value,
                       "; ".join(f"{p.pointer}: {p.message}" for p in problems))
    s = subjects_of(d)
    ctx = Context(s.facts, settings)
    if isinstance(rule, ClusterRule):
        v = rule.check(ctx)
    elif isinstance(rule, NodeRule):
        v = rule.check(s.nodes["node"], ctx)
    elif isinstance(rule, PairRule):
        v = rule.check(s.nodes["source"], s.nodes["destination"], ctx)
    elif isinstance(rule, PodRule):
        assert s.pod is not None
        v = rule.check(s.pod, ctx, Allow.model_validate(d.get("allow", {})))
    elif isinstance(rule, PodNodeRule):
        assert s.pod is not None
        v = rule.check(s.pod, s.nodes["source"], s.nodes["destination"], ctx)
        if not rule.relevant(s.pod):
            assert v.ok, f"{rule.code}: relevant() is False but check fails: {v.message}"
    else:  # pragma: no cover - a new scope needs a branch here
        raise CaseError(f"no runner for scope {rule.scope}")
    assert v.code == rule.code
    return Outcome(v.ok, v.severity.value, v.message)


def mismatches(outcome: Outcome, expect: Mapping[str, Any]) -> list[str]:
    """What differs between an outcome and an `expect` mapping (empty when it matches)."""
    out = []
    if outcome.ok is not expect["ok"]:
        out.append(f"ok is {outcome.ok}, expected {expect['ok']}")
    if "severity" in expect and outcome.severity != expect["severity"]:
        out.append(f"severity is {outcome.severity}, expected {expect['severity']}")
    wanted = expect.get("message_contains", [])
    for text in [wanted] if isinstance(wanted, str) else wanted:
        if text not in outcome.message:
            out.append(f"message lacks {text!r}")
    return out
