"""Every `--json` line the commands print fits schemas/events.schema.json, every event type
the code can emit is in that schema, and every type in the schema is in docs/events.md."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.conftest import ROOT

SCHEMA: dict[str, Any] = json.loads((ROOT / "schemas/events.schema.json").read_text())
LIVEPOLICY = str(ROOT / ".venv/bin/livepolicy")
EXAMPLE = ROOT / "examples"


def schema_types() -> set[str]:
    return {name for name, d in SCHEMA["$defs"].items()
            if "const" in d.get("properties", {}).get("type", {})}


def emitted_types() -> set[str]:
    """Event types in the source: the literal first argument of every make_event(...) or
    self._event(...) call, plus version_event()."""
    found: set[str] = set()
    for path in (ROOT / "livepolicy").rglob("*.py"):
        for call in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(call, ast.Call):
                continue
            f = call.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(
                f, ast.Attribute) else ""
            if name == "version_event":
                found.add("version")
            elif name in ("make_event", "_event") and call.args:
                arg = call.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
    return found


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LIVEPOLICY, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


def event_lines(out: str) -> list[dict[str, Any]]:
    lines = out.splitlines()
    assert lines, "no output"
    return [json.loads(line) for line in lines]  # one JSON document a line, nothing else


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Real runs on the embedded example: a simulated apply, a plan refused (no --agents), a plan
    without changes, and a new simulation in the same state directory (reseeded)."""
    d = tmp_path_factory.mktemp("events")
    shutil.copy(EXAMPLE / "cluster.yaml", d / "cluster.yaml")
    shutil.copy(EXAMPLE / "cluster.yaml", d / "fresh.yaml")
    pol = str(EXAMPLE / "policies")
    out: dict[str, list[dict[str, Any]]] = {}
    assert run("plan", "--cluster", "cluster.yaml", "--policies", pol, "--out", "plan.json",
               cwd=d).returncode == 0
    assert run("plan", "--cluster", "fresh.yaml", "--policies", pol, "--out", "fresh.json",
               cwd=d).returncode == 0
    r = run("apply", "plan.json", "--agents", "sim", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    out["apply"] = event_lines(r.stdout)
    r = run("apply", "plan.json", "--json", cwd=d)  # a snapshot plan needs --agents
    assert r.returncode == 1
    out["refused"] = event_lines(r.stdout)
    r = run("apply", "--cluster", "cluster.yaml", "--policies", pol, "--agents", "sim",
            "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    out["no_changes"] = event_lines(r.stdout)
    r = run("apply", "fresh.json", "--agents", "sim", "--json", cwd=d)
    assert r.returncode == 0, r.stderr
    out["reseeded"] = event_lines(r.stdout)
    return out


def test_schema_is_valid() -> None:
    Draft202012Validator.check_schema(SCHEMA)


def test_every_line_of_real_runs_fits_the_schema(
        streams: dict[str, list[dict[str, Any]]]) -> None:
    v = Draft202012Validator(SCHEMA)
    for name, events in streams.items():
        # a stream starts with `version`; refused before anything starts: a diagnostic
        assert events[0]["type"] == ("diagnostic" if name == "refused" else "version"), name
        for e in events:
            errors = [f"{'/'.join(map(str, err.absolute_path))}: {err.message}"
                      for err in v.iter_errors(e)]
            assert not errors, (name, e, errors)
    seen = {e["type"] for events in streams.values() for e in events}
    assert {"version", "apply_start", "apply_progress", "apply_complete", "labels_applied",
            "cluster_write", "change_summary", "diagnostic", "sim_reseeded"} <= seen
    assert all(e.get("simulated") is True for e in streams["apply"])
    assert streams["refused"][-1]["type"] == "diagnostic"
    assert streams["no_changes"][-1]["changes"]["migrated"] == 0


def test_the_schema_rejects_what_it_does_not_describe() -> None:
    v = Draft202012Validator(SCHEMA)
    base = {"@level": "info", "@message": "m", "@timestamp": "2026-12-06T04:00:00.000000+00:00"}
    assert v.is_valid({**base, "type": "labels_applied", "count": 3})
    assert not v.is_valid({**base, "type": "labels_applied", "count": 3, "extra": 1})
    assert not v.is_valid({**base, "type": "no_such_event"})
    assert not v.is_valid({**base, "type": "labels_applied"})


def test_validate_json_fits_the_schema(tmp_path: Path) -> None:
    v = Draft202012Validator({"$ref": "#/$defs/validate_result", "$defs": SCHEMA["$defs"]})
    ok = run("validate", str(EXAMPLE / "policies"), "--json", cwd=tmp_path)
    assert ok.returncode == 0 and v.is_valid(json.loads(ok.stdout))
    (tmp_path / "bad.yaml").write_text("apiVersion: livepolicy.io/v1alpha1\n"
                                       "kind: MigrationPolicy\nmetadata: {name: x}\n"
                                       "spec: {priority: lots}\n")
    bad = run("validate", str(tmp_path), "--json", cwd=tmp_path)
    doc = json.loads(bad.stdout)
    assert bad.returncode == 1 and doc["valid"] is False and doc["diagnostics"]
    assert not list(v.iter_errors(doc))


def test_every_emitted_type_is_in_the_schema_and_documented() -> None:
    emitted, in_schema = emitted_types(), schema_types()
    assert {"version", "apply_progress", "change_summary", "diagnostic"} <= emitted
    assert emitted <= in_schema, f"event types missing from the schema: {emitted - in_schema}"
    doc = (ROOT / "docs/events.md").read_text()
    undocumented = {t for t in in_schema if f"### `{t}`" not in doc}
    assert not undocumented, f"event types missing from docs/events.md: {undocumented}"
