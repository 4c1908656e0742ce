"""Golden planner cases: tests/cases/<name>/ holds cluster.yaml, policies and plan.json.

Add a case by dropping a cluster and policies in a new folder and running
`LIVEPOLICY_UPDATE_GOLDEN=1 pytest tests/planner/test_golden.py`; review plan.json.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from livepolicy.cli.common import load_facts, load_policies, resolve_now
from livepolicy.planner.plan import make_plan
from livepolicy.planner.serialize import dumps, plan_document
from tests.conftest import CASES, ROOT, update_golden

CASE_DIRS = sorted(p for p in CASES.iterdir() if (p / "cluster.yaml").exists())


def policies_path(case: Path) -> Path:
    return case / "policies" if (case / "policies").is_dir() else case / "policies.yaml"


def plan_bytes(case: Path) -> bytes:
    facts = load_facts(str((case / "cluster.yaml").relative_to(ROOT)))
    ps = load_policies(str(policies_path(case).relative_to(ROOT)))
    return dumps(plan_document(make_plan(facts, ps, resolve_now(None, facts))))


@pytest.mark.parametrize("case", CASE_DIRS, ids=[p.name for p in CASE_DIRS])
def test_golden_plan(case: Path) -> None:
    got = plan_bytes(case)
    golden = case / "plan.json"
    if update_golden() or not golden.exists():
        golden.write_bytes(got)
    assert got.decode() == golden.read_text(), f"plan for {case.name} changed; review and " \
        "regenerate with LIVEPOLICY_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("case", CASE_DIRS, ids=[p.name for p in CASE_DIRS])
def test_plan_is_byte_identical_across_runs(case: Path) -> None:
    assert plan_bytes(case) == plan_bytes(case)
