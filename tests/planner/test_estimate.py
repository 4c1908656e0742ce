"""The estimate model against the lab figures it was fitted to (docs/benchmarks.md).

Golden plans pin the numbers for the example; these pin the shape of the model: which
rate moves memory, what is flat in memory, and how pre-copy converges.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import pytest

from livepolicy.cli.common import load_facts
from livepolicy.facts.model import PodFacts
from livepolicy.planner.estimate import (
    FIXED_OVERHEAD_MS,
    GIB,
    PIPELINE_RATE,
    estimate,
    resolve_transfer,
)
from livepolicy.policy.models import Strategy

MIB = 2**20


@cache
def _example_pod() -> PodFacts:
    return load_facts("examples/cluster.yaml").pods[0]


def pod(memory: int) -> PodFacts:
    return dataclasses.replace(_example_pod(), memory_usage_bytes=memory)


@pytest.mark.parametrize(("memory", "measured_ms"), [(100 * MIB, 333), (GIB, 1966)])
def test_stop_and_copy_moves_memory_at_the_agents_rate_not_the_link(memory: int,
                                                                    measured_ms: int) -> None:
    est = estimate(pod(memory), "stop-and-copy", Strategy(bandwidth="5Gbps"))
    assert est.freeze_ms == FIXED_OVERHEAD_MS + memory * 1000 // PIPELINE_RATE
    assert est.freeze_ms == est.duration_ms
    assert 0.8 < est.freeze_ms / measured_ms < 1.25  # within the lab's run-to-run spread


def test_a_slower_link_than_the_agents_sets_the_rate() -> None:
    est = estimate(pod(GIB), "stop-and-copy", Strategy(bandwidth="1Gbps"))
    assert est.freeze_ms == FIXED_OVERHEAD_MS + GIB * 8 * 1000 // 1_000_000_000


def test_post_copy_freeze_is_flat_in_memory_and_its_pages_arrive_after() -> None:
    small, large = (estimate(pod(m), "post-copy", Strategy()) for m in (100 * MIB, GIB))
    assert small.freeze_ms == large.freeze_ms == 300  # lab: 233 ms and 254 ms
    assert large.duration_ms > 10 * large.freeze_ms  # lab: 4.2 s of page tail for 1 GiB


def test_iterative_rounds_shrink_the_freeze_until_the_budget() -> None:
    strategy = Strategy(dirty_rate="50MiB/s", freeze_budget="300ms", max_rounds=5)
    it = estimate(pod(GIB), "iterative", strategy)
    sc = estimate(pod(GIB), "stop-and-copy", strategy)
    assert it.rounds > 1 and it.bytes_sent > GIB
    assert it.freeze_ms <= FIXED_OVERHEAD_MS + 300 < sc.freeze_ms
    assert it.duration_ms > sc.duration_ms  # pre-copy trades total time for a short freeze


def test_pre_copy_that_cannot_converge_stops_after_one_round() -> None:
    est = estimate(pod(GIB), "iterative", Strategy(dirty_rate="1GiB/s"))
    assert est.rounds == 2  # the full copy, then the frozen remainder
    assert est.freeze_ms >= FIXED_OVERHEAD_MS + GIB * 1000 // PIPELINE_RATE


def test_arm64_never_iterates() -> None:
    node = dataclasses.replace(load_facts("examples/cluster.yaml").nodes[0], architecture="arm64")
    assert resolve_transfer(Strategy(), node) == ("stop-and-copy", "")
    mode, note = resolve_transfer(Strategy(memory_transfer="iterative"), node)
    assert mode == "stop-and-copy" and "arm64" in note
