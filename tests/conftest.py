"""Shared fixtures: paths, and loaders that build facts and policies from test data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from livepolicy.kube.client import KubeClient
from tests.support.envtest import KubeTestEnv, kube_test_env

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "cases"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths in plans (the snapshot source) are relative to the repo root."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def kube_env() -> Iterator[KubeTestEnv]:
    """A real kube-apiserver for one module (tests/kube shares one per session)."""
    yield from kube_test_env()


@pytest.fixture(scope="module")
def kube(kube_env: KubeTestEnv) -> Iterator[KubeClient]:
    """An admin client of that apiserver."""
    with KubeClient.from_config(str(kube_env.kubeconfig_path)) as client:
        yield client


def update_golden() -> bool:
    return os.environ.get("LIVEPOLICY_UPDATE_GOLDEN") == "1"
