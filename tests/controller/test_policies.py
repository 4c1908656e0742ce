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
