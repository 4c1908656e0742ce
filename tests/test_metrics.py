"""Apply metrics: the sink turns the engine's events into a Prometheus textfile, written
atomically at the end of the run; `apply --agents sim --metrics-file` on the example."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from livepolicy.apply.events import make_event
from livepolicy.apply.metrics import MetricsSink
from tests.conftest import ROOT

LIVEPOLICY = str(ROOT / ".venv/bin/livepolicy")


def parse(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted labels: value}; the prometheus_client parser is strict about
    the exposition format (it raises on a malformed line)."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(path.read_text()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def summary(**changes: int) -> dict[str, Any]:
    counts = dict.fromkeys(("migrated", "rolled_back", "failed", "skipped", "deferred"), 0)
    return make_event("change_summary", "done", operation="apply", changes={**counts, **changes},
                      labels=2, outcomes=[])


def test_sink_counts_results_and_observes_freezes(tmp_path: Path) -> None:
    now = iter([100.0, 112.5])
    path = tmp_path / "m" / "apply.prom"
    sink = MetricsSink(path, clock=lambda: next(now), wall=lambda: 1_800_000_000.0)
    mig = {"id": "m1", "pod": "a/b", "from": "n1", "to": "n2"}
    sink.emit(make_event("version", "v", livepolicy="0", ui="1.0"))
    for freeze_ms, duration_ms in ((40, 2_000), (300, 7_000)):
        sink.emit(make_event("apply_complete", "ok", migration=mig, outcome="migrated",
                             freeze_ms=freeze_ms, duration_ms=duration_ms))
    assert not path.exists()  # only at the end of the run
    sink.emit(summary(migrated=2, rolled_back=1))
    m = parse(path)
    assert m["livepolicy_apply_migrations_total"] == {
        (("result", r),): v for r, v in (("migrated", 2.0), ("rolled_back", 1.0),
                                         ("failed", 0.0), ("skipped", 0.0),
                                         ("deferred", 0.0))}
    assert m["livepolicy_apply_freeze_seconds_count"] == {(): 2.0}
    assert m["livepolicy_apply_freeze_seconds_sum"][()] == pytest.approx(0.34)
    buckets = m["livepolicy_apply_freeze_seconds_bucket"]
    assert buckets[(("le", "0.05"),)] == 1.0 and buckets[(("le", "0.25"),)] == 1.0
    assert buckets[(("le", "0.5"),)] == 2.0 and buckets[(("le", "+Inf"),)] == 2.0
    assert m["livepolicy_apply_migration_duration_seconds_sum"][()] == pytest.approx(9.0)
    assert m["livepolicy_apply_duration_seconds"] == {(): 12.5}
    assert m["livepolicy_apply_label_changes"] == {(): 2.0}
    assert m["livepolicy_apply_simulated"] == {(): 0.0}
    assert m["livepolicy_apply_last_run_timestamp_seconds"] == {(): 1.8e9}
    assert os.listdir(path.parent) == ["apply.prom"]  # no temporary file left behind


def test_a_failed_write_keeps_the_old_file_whole(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "apply.prom"
    path.write_text("# the previous run\n")

    def broken(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)
    sink = MetricsSink(path)
    sink.emit(summary(migrated=1))  # said, not raised: the apply itself is done
    assert not sink.written and "disk full" in sink.error
    assert f"warning: {path}: cannot write the metrics file: disk full" in capsys.readouterr().err
    assert path.read_text() == "# the previous run\n"
    assert os.listdir(tmp_path) == ["apply.prom"]


def test_apply_sim_writes_the_metrics_file(tmp_path: Path) -> None:
    shutil.copy(ROOT / "examples/cluster.yaml", tmp_path / "cluster.yaml")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([LIVEPOLICY, *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, check=False)

    r = run("plan", "--cluster", "cluster.yaml", "--policies", str(ROOT / "examples/policies"),
            "--out", "plan.json")
    assert r.returncode == 0, r.stderr
    r = run("apply", "plan.json", "--agents", "sim", "--json",
            "--metrics-file", "metrics/apply.prom")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    done = [e for e in events if e["type"] == "apply_complete"]
    last = events[-1]
    assert last["type"] == "change_summary" and done
    m = parse(tmp_path / "metrics/apply.prom")
    by_result = {dict(k)["result"]: v for k, v in m["livepolicy_apply_migrations_total"].items()}
    assert by_result == {r: float(n) for r, n in last["changes"].items()}
    assert by_result["migrated"] == len(done) > 0
    assert m["livepolicy_apply_freeze_seconds_count"] == {(): float(len(done))}
    assert m["livepolicy_apply_freeze_seconds_sum"][()] == pytest.approx(
        sum(e["freeze_ms"] for e in done) / 1000)
    assert m["livepolicy_apply_duration_seconds"][()] > 0
    assert m["livepolicy_apply_simulated"] == {(): 1.0}
    assert m["livepolicy_apply_label_changes"] == {(): float(last["labels"])}
