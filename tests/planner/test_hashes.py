"""PodHasher writes the same bytes as fact_hash (orjson on the dataclass), pod for pod."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from hypothesis import HealthCheck, given, settings

from bench.synth import generate
from livepolicy.cli.common import load_facts
from livepolicy.facts.kubeobjects import build_facts
from livepolicy.facts.model import ContainerFacts, PodFacts, VolumeFacts, VolumeKind
from livepolicy.planner.hashes import PodHasher, fact_hash
from tests.planner.strategies import cluster


def assert_same(pods: tuple[PodFacts, ...] | list[PodFacts]) -> None:
    hasher = PodHasher()
    for _ in range(2):  # the second round reuses the shared parts' bytes
        for p in pods:
            assert hasher(p) == fact_hash(p), p.key


def test_example_and_synthetic_clusters() -> None:
    assert_same(load_facts("examples/cluster.yaml").pods)
    assert_same(build_facts(generate(30, 20, seed=5)["items"], lambda p, m: None).pods)


def test_unsorted_mappings_nested_parts_and_other_mappings() -> None:
    base = load_facts("examples/cluster.yaml").pods[0]
    odd = replace(
        base, labels={"z": "1", "a": "2", "m": "3"}, annotations={"livepolicy.io/b": "x",
                                                                 "livepolicy.io/a": "y"},
        node_selector={"zone": "b", "arch": "amd64"},
        containers=(ContainerFacts("c", tty=True, extended_resources={"z/gpu": 1, "a/x": 2}),
                    ContainerFacts("d")),
        volumes=(VolumeFacts("v", VolumeKind.PVC, claim="c", zone="z", bound=False,
                             backend=VolumeKind.EBS),))
    proxied = replace(base, labels=MappingProxyType({"b": "1", "a": "2"}))
    # A value only `_default` writes (not reachable from the converters, but the same bytes):
    odd_value = replace(base, labels={"a": frozenset({2, 1})})  # type: ignore[dict-item]
    assert_same([odd, proxied, base, odd, odd_value])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=cluster())
def test_random_clusters(items: list[dict[str, Any]]) -> None:
    assert_same(build_facts(items, lambda p, m: None).pods)
