"""Every pod rule's cheap `blocks` predicate agrees with its explaining `check`."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings

from livepolicy.cli.common import load_facts
from livepolicy.facts.kubeobjects import build_facts
from livepolicy.facts.model import ClusterFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context
from livepolicy.rules.registry import POD_RULES
from tests.planner.strategies import cluster

ALLOWS = (Allow(), Allow(host_path=True, custom_controllers=True))


def assert_agree(facts: ClusterFacts) -> None:
    ctx = Context(facts)
    for pod in facts.pods:
        for allow in ALLOWS:
            for rule in POD_RULES:
                assert rule.blocks(pod, ctx, allow) == rule.check(pod, ctx, allow).blocks, \
                    (rule.code, pod.key, allow)


def test_predicates_agree_on_the_example() -> None:
    assert_agree(load_facts("examples/cluster.yaml"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=cluster())
def test_predicates_agree_on_random_clusters(items: list[dict[str, Any]]) -> None:
    assert_agree(build_facts(items, lambda p, m: None))
