"""Every rule, firing and not firing, from the data in tests/rules/cases/<CODE>.yaml.

See tests/rules/harness.py for the case format. Besides running each case, this checks
that every rule has cases both ways, that settings-driven cases really change outcomes,
and that every pair rule's `key` captures all that its `check` reads (the compatibility
graph evaluates one representative per class of equal keys).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Hashable, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livepolicy.facts.model import ClusterFacts, ClusterInfo, NodeFacts
from livepolicy.policy.models import DEFAULT_SETTINGS, Allow, SettingsSpec
from livepolicy.rules.base import Context, PairRule, Scope
from livepolicy.rules.cluster_platform import Platform
from livepolicy.rules.cluster_version import KubernetesVersion
from livepolicy.rules.node_managed import ManagedNode
from livepolicy.rules.pair_subnet import SameSubnet
from livepolicy.rules.pod_gpu import Gpu
from livepolicy.rules.registry import ALL_RULES, PAIR_RULES
from tests.rules.harness import (
    RULES,
    Case,
    CaseError,
    all_cases,
    case_codes,
    facts_of,
    load_cases,
    mismatches,
    run,
    settings_of,
    subjects_of,
    validate,
)

CASES = all_cases()
EMPTY = ClusterFacts(ClusterInfo(), (), ())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule_case(case: Case) -> None:
    validate(case)
    outcome = run(case)
    problems = mismatches(outcome, case.expect)
    assert not problems, f"{case}: {'; '.join(problems)} (got {outcome})"
    if case.expect_default is not None:
        default = run(case, use_case_settings=False)
        problems = mismatches(default, case.expect_default)
        assert not problems, (f"{case} with default settings: {'; '.join(problems)} "
                              f"(got {default})")


# ------------------------------------------------------------------ coverage of the cases

def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"duplicate case descriptions: {dupes}"


def test_every_case_file_names_a_rule() -> None:
    unknown = [c for c in case_codes() if c not in RULES]
    assert not unknown, f"case files for unknown rule codes: {unknown}"


@pytest.mark.parametrize("code", [r.code for r in ALL_RULES])
def test_every_rule_fires_and_passes(code: str) -> None:
    """Each rule has a case file with at least one passing and one failing case."""
    assert code in case_codes(), f"no tests/rules/cases/{code}.yaml"
    cases = load_cases(code)
    for c in cases:
        validate(c)
    outcomes = {c.expect["ok"] for c in cases}
    what = ("a case without problems and one with problems"
            if RULES[code].scope is Scope.TEMPLATE else "an ok: true and an ok: false case")
    assert outcomes == {True, False}, f"{code}.yaml needs {what}"


def test_malformed_cases_are_reported() -> None:
    good = {"description": "x", "node": {}, "expect": {"ok": True}}
    validate(Case("ND004", 0, good))
    for bad in ({**good, "expect": {"ok": "yes"}},
                {**good, "expect": {"ok": True, "severty": "block"}},
                {**good, "nodes": {}},
                {"description": "x", "expect": {"ok": True}},
                {**good, "expect_default": {"ok": False}}):
        with pytest.raises(CaseError):
            validate(Case("ND004", 0, bad))


# ------------------------------------------------------------------ settings drive outcomes

SETTINGS_THAT_MUST_MATTER = ("managedNodeSelector", "labels.subnetId", "supportedPlatforms",
                             "minKubernetesVersion", "gpuResources")


def _paths(d: dict[str, Any], prefix: str = "") -> Iterable[str]:
    for k, v in d.items():
        yield prefix + k
        if isinstance(v, dict) and k != "managedNodeSelector":
            yield from _paths(v, f"{prefix}{k}.")


def test_settings_change_outcomes() -> None:
    """For each setting above, some case flips its verdict between the case's settings and
    the defaults (both verdicts are asserted by test_rule_case)."""
    flipping: dict[str, list[str]] = {}
    for c in CASES:
        if c.expect_default is not None and c.expect_default["ok"] != c.expect["ok"]:
            for path in _paths(c.data["settings"]):
                flipping.setdefault(path, []).append(c.id)
    missing = [s for s in SETTINGS_THAT_MUST_MATTER if s not in flipping]
    assert not missing, f"no case shows these settings changing an outcome: {missing}"


def test_settings_change_outcome_directly() -> None:
    """The same cluster, nodes and pod judged under two Settings.spec give two verdicts."""
    node = {"metadata": {"name": "n", "labels": {"example.com/pool": "live",
                                                 "example.com/subnet": "s-1"}}}
    other = {"metadata": {"name": "m", "labels": {"example.com/subnet": "s-1"}}}
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n", "containers": [
        {"name": "c", "resources": {"limits": {"example.com/fpga": "1"}}}]}}
    s = subjects_of({"cluster": {"platform": "kind", "kubernetesVersion": "v1.29.2"},
                     "node": node, "source": other, "pod": pod})
    custom = SettingsSpec.model_validate({
        "managedNodeSelector": {"matchLabels": {"example.com/pool": "live"}},
        "labels": {"subnetId": "example.com/subnet"},
        "supportedPlatforms": ["eks", "kind"], "minKubernetesVersion": "1.29",
        "gpuResources": ["example.com/fpga"]})
    n, m, p = s.nodes["node"], s.nodes["source"], s.pod
    assert p is not None

    def verdicts(spec: SettingsSpec) -> dict[str, bool]:
        ctx = Context(s.facts, spec)
        return {"CL001": Platform().check(ctx).ok,
                "CL002": KubernetesVersion().check(ctx).ok,
                "ND001": ManagedNode().check(n, ctx).ok,
                "PR005": SameSubnet().check(n, m, ctx).ok,
                "WL007": Gpu().check(p, ctx, Allow()).ok}

    assert verdicts(DEFAULT_SETTINGS) == {"CL001": False, "CL002": False, "ND001": False,
                                          "PR005": False, "WL007": True}
    assert verdicts(custom) == {"CL001": True, "CL002": True, "ND001": True,
                                "PR005": True, "WL007": False}


# ------------------------------------------------------------------ pair keys are complete

@functools.cache
def _case_nodes() -> list[NodeFacts]:
    """Every distinct node in every case file (names ignored)."""
    seen: dict[str, NodeFacts] = {}
    for c in CASES:
        if c.rule.scope is Scope.TEMPLATE:
            continue
        for n in subjects_of(c.data).facts.nodes:
            seen.setdefault(repr(dataclasses.replace(n, name="-")), n)
    return list(seen.values())


def _pair_settings(rule: PairRule) -> list[SettingsSpec]:
    """The default settings and every settings of the rule's own cases."""
    out = {repr(DEFAULT_SETTINGS): DEFAULT_SETTINGS}
    for c in load_cases(rule.code):
        if "settings" in c.data:
            s = settings_of(c.data)
            out.setdefault(repr(s), s)
    return list(out.values())


def assert_key_consistent(rule: PairRule, nodes: list[NodeFacts], ctx: Context) -> int:
    """Equal keys on both ends imply equal verdicts (ok and severity); returns pairs checked."""
    classes: dict[Hashable, list[NodeFacts]] = {}
    for n in nodes:
        classes.setdefault(rule.key(n, ctx), []).append(n)
    checked = 0
    for (ka, srcs), (kb, dsts) in itertools.product(classes.items(), repeat=2):
        seen: dict[tuple[bool, str], tuple[str, str, str]] = {}
        for s, d in itertools.product(srcs, dsts):
            v = rule.check(s, d, ctx)
            seen.setdefault((v.ok, v.severity.value), (s.name, d.name, v.message))
            checked += 1
        assert len(seen) == 1, (
            f"{rule.code}: key {ka!r} -> {kb!r} covers pairs with different verdicts: "
            f"{seen}")
    return checked


@pytest.mark.parametrize("rule", PAIR_RULES, ids=[r.code for r in PAIR_RULES])
def test_pair_key_consistent_over_case_nodes(rule: PairRule) -> None:
    nodes = _case_nodes()
    assert len(nodes) > 20
    for s in _pair_settings(rule):
        assert assert_key_consistent(rule, nodes, Context(EMPTY, s)) >= len(nodes) ** 2


_LABELS: dict[str, list[str | None]] = {
    "topology.kubernetes.io/region": ["us-east-1", "eu-west-1", None],
    "topology.kubernetes.io/zone": ["us-east-1a", "us-east-1b", None],
    "kubernetes.io/arch": ["amd64", "arm64", None],
    "node.kubernetes.io/instance-type": ["m5.large", "c5.xlarge", "m5a.large", "c6g.large",
                                         "c3.large", "u-6tb1.metal", None],
    "topology.cast.ai/subnet-id": ["subnet-a", "subnet-b", "", None],
    "live.cast.ai/custom-network": ["true", "", None],
    "k8s.amazonaws.com/eniConfig": ["us-east-1a", "pods-b", None],
    "feature.node.kubernetes.io/cpu-cpuid.AVX512F": ["true", "false", None],
    "feature.node.kubernetes.io/cpu-cpuid.AVX2": ["true", None],
    "feature.node.kubernetes.io/cpu-cpuid.SHA": ["true", None],
}

node_labels = st.fixed_dictionaries(
    {k: st.sampled_from(v) for k, v in _LABELS.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not None})


@settings(max_examples=50, deadline=None)
@given(labels=st.lists(node_labels, min_size=2, max_size=6),
       mode=st.sampled_from(["", "standard", "custom"]),
       region=st.sampled_from(["", "us-east-1"]))
def test_pair_key_consistent_on_random_nodes(labels: list[dict[str, str]], mode: str,
                                             region: str) -> None:
    items: list[dict[str, Any]] = [
        {"apiVersion": "livepolicy.io/v1alpha1", "kind": "ClusterInfo",
         "metadata": {"name": "c"}, "spec": {"region": region, "networking": {"mode": mode}}},
        {"apiVersion": "crd.k8s.amazonaws.com/v1alpha1", "kind": "ENIConfig",
         "metadata": {"name": "us-east-1a"}}]
    items += [{"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": f"n{i}", "labels": ls}} for i, ls in enumerate(labels)]
    facts = facts_of(items)
    ctx = Context(facts)
    for rule in PAIR_RULES:
        assert_key_consistent(rule, list(facts.nodes), ctx)


def test_key_check_catches_an_incomplete_key() -> None:
    """The key check has teeth: a key that forgets the subnet label is caught."""

    class SubnetKeyWithoutLabel(SameSubnet):
        def key(self, node: NodeFacts, ctx: Context) -> Hashable:
            return node.network_mode

    with pytest.raises(AssertionError, match="PR005: key"):
        assert_key_consistent(SubnetKeyWithoutLabel(), _case_nodes(), Context(EMPTY))
