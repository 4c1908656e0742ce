"""Policy sources of the controller: a directory fingerprinted by content, ConfigMap
texts with the key as the file in every diagnostic, and the last good set kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from livepolicy.controller.cache import Store
from livepolicy.controller.policies import (
    ConfigMapPolicies,
    DirPolicies,
    dir_fingerprint,
    load_texts,
)
from livepolicy.core.diagnostics import DiagnosticError
from tests.conftest import ROOT

GOOD = (ROOT / "bench/policies/bench.yaml").read_text()
BAD = """apiVersion: livepolicy.io/v1alpha1
kind: MigrationPolicy
metadata:
  name: broken
spec:
  priority: high
  sources:
    cordoned: true
"""


def test_texts_load_with_the_key_as_file() -> None:
    ps = load_texts({"bench.yaml": GOOD}, "configmap ops/policies")
    assert sorted(ps.policies) == ["drain-cordoned", "retire-old"]
    assert ps.files == ("bench.yaml",)
    assert ps.origin("MigrationPolicy", "retire-old").file == "bench.yaml"
    with pytest.raises(DiagnosticError) as exc:
        load_texts({"bench.yaml": GOOD, "team-b.yaml": BAD, "notes.txt": "hi"}, "cm")
    formatted = [d.format() for d in exc.value.diagnostics]
    assert any(f.startswith("team-b.yaml:6:") and "/spec/priority" in f for f in formatted)
    assert any(f.startswith("notes.txt: unknown file") for f in formatted)
    assert not any("livepolicy-policies-" in f for f in formatted)  # no temp path leaks
    with pytest.raises(DiagnosticError, match="holds no policy files"):
        load_texts({}, "configmap ops/policies")


def test_directory_changes_and_last_good_set(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD)
    src = DirPolicies(tmp_path, interval=2.0)
    assert src.check(0.0) is True and src.state.current is not None
    good = src.state.current
    assert src.check(1.0) is None  # not yet time to look
    assert src.check(2.0) is None  # looked: unchanged
    fp = dir_fingerprint(tmp_path)
    (tmp_path / "p.yaml").write_text(BAD)
    assert dir_fingerprint(tmp_path) != fp
    assert src.check(4.0) is False
    assert src.state.current is good and not src.state.valid and src.state.errors == 1
    assert src.state.problems[0].format().startswith(f"{tmp_path}/p.yaml:6:")
    assert src.check(6.0) is None  # the same bad content is not reported twice
    (tmp_path / "p.yaml").write_text(GOOD)
    assert src.check(8.0) is True and src.state.valid and src.state.loads == 2


def test_configmap_source() -> None:
    store = Store("ConfigMap")
    src = ConfigMapPolicies("ops", "policies", store)
    assert src.check(0.0) is None  # not listed yet
    store.replace([], "1")
    assert src.check(0.0) is False
    assert "the ConfigMap does not exist" in src.state.problems[0].message
    cm = {"metadata": {"name": "policies", "namespace": "ops", "resourceVersion": "2"},
          "data": {"bench.yaml": GOOD}}
    store.replace([cm], "2")
    assert src.check(0.0) is True and src.state.current is not None
    assert src.check(1.0) is None


def test_configmap_volume_update_by_symlink_swap(tmp_path: Path) -> None:
    """The kubelet updates a ConfigMap volume atomically: new files in a fresh
    `..<timestamp>` directory, then the `..data` symlink is swapped; the visible names
    are symlinks through `..data`. The hidden directories are not read as policies."""
    def version(name: str, files: dict[str, str]) -> None:
        d = tmp_path / name
        d.mkdir()
        for k, v in files.items():
            (d / k).write_text(v)
        tmp = tmp_path / "..data_tmp"
        tmp.symlink_to(name)
        tmp.replace(tmp_path / "..data")
        for k in files:
            link = tmp_path / k
            if not link.is_symlink():
                link.symlink_to(f"..data/{k}")

    version("..2026_12_01_21_00_00.1", {"bench.yaml": GOOD})
    src = DirPolicies(tmp_path, interval=0.0)
    assert src.check(0.0) is True
    assert src.state.current is not None and src.state.current.files == (
        str(tmp_path / "bench.yaml"),)
    version("..2026_12_01_21_05_00.2", {"bench.yaml": BAD})
    assert src.check(1.0) is False and src.state.current is not None
    assert src.state.problems[0].file == str(tmp_path / "bench.yaml")
    version("..2026_12_01_21_10_00.3", {"bench.yaml": GOOD.replace("maxParallel: 20",
                                                                   "maxParallel: 5")})
    assert src.check(2.0) is True and src.state.valid
    budgets = src.state.current.policies["drain-cordoned"].spec.budgets
    assert budgets.max_parallel == 5
