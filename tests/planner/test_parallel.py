"""Work shared with a forked child gives exactly what one process computes alone.

Large clusters convert pods and assess labels in two processes (livepolicy.core.forkshare);
the thresholds are lowered here so small clusters take that path too.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest

from bench.synth import generate
from livepolicy.cli.common import load_policies
from livepolicy.core import forkshare
from livepolicy.facts import kubeobjects
from livepolicy.facts.kubeobjects import build_facts
from livepolicy.planner import plan as planner
from livepolicy.planner.serialize import dumps, plan_document

NOW = datetime(2026, 11, 1, tzinfo=UTC)
pytestmark = pytest.mark.skipif(not forkshare.can_fork(), reason="needs fork and 2 cores")


def run(items: list[dict[str, Any]], threshold: int,
        monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[str, str]], bytes]:
    monkeypatch.setattr(kubeobjects, "PARALLEL_PODS", threshold)
    monkeypatch.setattr(planner, "PARALLEL_PODS", threshold)
    forks: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        forks.append(1)
        return real_fork()
    monkeypatch.setattr(os, "fork", fork)
    real_waitpid = os.waitpid

    def waitpid(pid: int, options: int) -> tuple[int, int]:
        done = real_waitpid(pid, options)
        assert done[1] == 0, "the child failed (its share was redone in the parent)"
        return done
    monkeypatch.setattr(os, "waitpid", waitpid)
    problems: list[tuple[str, str]] = []
    facts = build_facts(items, lambda p, m: problems.append((p, m)))
    plan = planner.make_plan(facts, load_policies("bench/policies"), NOW)
    assert len(forks) == (2 if threshold == 0 else 0)  # conversion, then labels
    return problems, dumps(plan_document(plan))


def test_forked_conversion_and_labels_match_one_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    items = generate(40, 20, seed=11)["items"]
    alone = run(items, 10**9, monkeypatch)
    shared = run(items, 0, monkeypatch)
    assert shared == alone
    assert b'"action": "add"' in alone[1]  # the plan has label changes to compare


def test_problems_keep_their_order_and_faulty_shapes_are_not_cached(
        monkeypatch: pytest.MonkeyPatch) -> None:
    items = generate(20, 10, seed=2)["items"]
    pods = [o for o in items if o["kind"] == "Pod"]
    for pod in (pods[1], pods[2], pods[-2], pods[-1]):  # in both shares, same shape twice
        pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "lots"}}
    alone = run(items, 10**9, monkeypatch)
    shared = run(items, 0, monkeypatch)
    assert shared[0] == alone[0]
    assert [m for _, m in alone[0]] == ["invalid CPU quantity 'lots'"] * 4


def test_a_failing_child_leaves_the_work_to_the_parent() -> None:
    parent = os.getpid()

    def child() -> int:
        if os.getpid() != parent:
            os._exit(3)  # dies in the fork: the parent must redo its share
        return 7

    assert forkshare.in_child(child, lambda: 5) == (7, 5)
