"""Shared fixtures: paths, and loaders that build facts and policies from test data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "cases"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths in plans (the snapshot source) are relative to the repo root."""
    monkeypatch.chdir(ROOT)


def update_golden() -> bool:
    return os.environ.get("LIVEPOLICY_UPDATE_GOLDEN") == "1"
