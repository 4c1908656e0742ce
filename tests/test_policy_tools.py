"""fmt keeps comments and is idempotent; JSON Schemas in schemas/ never drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from livepolicy.cli.main import cli
from livepolicy.policy.fmt import format_text
from livepolicy.policy.schema import render, schemas
from tests.conftest import ROOT

MESSY = """\
# leading comment stays
spec:
    sources:
          cordoned: true   # only cordoned nodes
    priority: 5
metadata: {name: messy}
kind: MigrationPolicy
apiVersion: livepolicy.io/v1alpha1
"""


def test_fmt_orders_keys_keeps_comments_and_is_idempotent() -> None:
    out = format_text(MESSY)
    assert out.index("apiVersion") < out.index("kind") < out.index("metadata") < \
        out.index("spec")
    assert out.index("priority") < out.index("sources"), "spec keys follow the schema order"
    assert "# leading comment stays" in out and "# only cordoned nodes" in out
    assert format_text(out) == out


def test_fmt_check_and_rewrite(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(MESSY)
    runner = CliRunner()
    check = runner.invoke(cli, ["fmt", "--check", str(tmp_path)])
    assert check.exit_code == 1 and "p.yaml" in check.output
    assert (tmp_path / "p.yaml").read_text() == MESSY, "--check must not write"
    assert runner.invoke(cli, ["fmt", str(tmp_path)]).exit_code == 0
    assert runner.invoke(cli, ["fmt", "--check", str(tmp_path)]).exit_code == 0
    assert runner.invoke(cli, ["validate", str(tmp_path)]).exit_code == 0


def test_shipped_policies_are_canonical() -> None:
    for d in ("policies", "examples/policies"):
        r = CliRunner().invoke(cli, ["fmt", "--check", str(ROOT / d)])
        assert r.exit_code == 0, f"{d} needs `livepolicy fmt`: {r.output}"


def test_schemas_on_disk_match_the_models() -> None:
    for name, schema in schemas().items():
        on_disk = ROOT / "schemas" / name
        assert on_disk.read_text() == render(schema), f"run `livepolicy schema` ({name})"


def test_schemas_forbid_unknown_fields() -> None:
    s = json.loads((ROOT / "schemas" / "migrationpolicy.json").read_text())
    assert s["additionalProperties"] is False
    spec = s["$defs"]["MigrationPolicySpec"]
    assert spec["additionalProperties"] is False
    assert "maxUnavailablePerWorkload" in s["$defs"]["Budgets"]["properties"]


def properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every field of a schema: the properties of its root and of each of its $defs."""
    objects = [("", schema), *((f"/$defs/{k}", v) for k, v in schema.get("$defs", {}).items())]
    return [(f"{where}/properties/{name}", prop) for where, obj in objects
            for name, prop in obj.get("properties", {}).items()]


def test_schema_fields_have_human_titles_and_descriptions() -> None:
    """Editors show a field's title and description on hover: both come from the models
    (field names, docstrings), never pydantic's "Maxparallel"."""
    for name, schema in schemas().items():
        props = properties(schema)
        assert props, name
        for path, prop in props:
            assert prop.get("description"), f"{name}{path} has no description"
            ref = prop.get("$ref", "").removeprefix("#/$defs/")
            title = prop.get("title") or schema["$defs"][ref]["title"] if ref else prop["title"]
            assert title and (" " in title or title.istitle() or title.isupper()), \
                f"{name}{path}: {title!r}"
            assert "\n" not in prop["description"], f"{name}{path}"
        for d in schema.get("$defs", {}).values():
            assert d.get("description"), d.get("title")
    budgets = schemas()["migrationpolicy.json"]["$defs"]["Budgets"]["properties"]
    assert budgets["maxParallel"]["title"] == "Max parallel"
    strategy = schemas()["migrationpolicy.json"]["$defs"]["Strategy"]["properties"]
    assert strategy["completionTimeoutPerGib"]["title"] == "Completion timeout per GiB"


# Problems that used to show only after others were fixed: (file, pointer, message). A YAML
# error hid the rest of its file; a document failing validation hid its cross-document
# checks (references, duplicate), its "no sources" and window checks, and the template
# rules; a failed template made a policy naming it report a wrong "unknown NodeTemplate".
ONE_PASS = {
    ("more.yaml", "/spec/colour", "unknown field 'colour'"),
    ("more.yaml", "/spec/placement", "'binpack' or 'spread'"),
    ("more.yaml", "", "duplicate key \"placement\""),
    ("policies.yaml", "/metadata/name", "duplicate MigrationPolicy 'p1'"),
    ("policies.yaml", "/spec/sources/templates/1", "unknown NodeTemplate 'ghost'"),
    ("policies.yaml", "/spec/strategy/bandwidth", "not a bandwidth: 'fast'"),
    ("policies.yaml", "/spec/windows/0/schedule", "invalid cron expression"),
    ("policies.yaml", "/spec/windows/0/duration", "not a duration: '2 hours'"),
    ("policies.yaml", "/spec/windows/0/timeZone", "unknown time zone"),
    ("policies.yaml", "/spec/sources", "sources selects no node"),
    ("policies.yaml", "/spec/priority", "valid integer"),
    ("settings.yaml", "/spec/maxParallel", "greater than or equal to 1"),
    ("settings.yaml", "/kind", "only one Settings object"),
    ("templates.yaml", "", "invalid YAML: expected ','"),
    ("templates.yaml", "/spec/architecture", "TPL001"),
    ("templates.yaml", "/spec/runtime/minVersion", "'two' does not match"),
    ("templates.yaml", "/spec/instanceFamilies", "missing required field 'instanceFamilies'"),
}
ONE_PASS_FILES = {
    "templates.yaml": """\
apiVersion: livepolicy.io/v1alpha1
kind: NodeTemplate
metadata: {name: early
spec: {}
---
apiVersion: livepolicy.io/v1alpha1
kind: NodeTemplate
metadata:
  name: gen5
spec:
  architecture: any
  instanceFamilies: [c5, m5]
  runtime:
    minVersion: two
---
apiVersion: livepolicy.io/v1alpha1
kind: NodeTemplate
metadata:
  name: broken
spec:
  architecture: amd64
""",
    "policies.yaml": """\
apiVersion: livepolicy.io/v1alpha1
kind: MigrationPolicy
metadata:
  name: p1
spec:
  sources:
    templates: [gen5, ghost]
  strategy:
    bandwidth: fast
  windows:
    - schedule: "99 * * * *"
      duration: 2 hours
      timeZone: Nowhere/City
---
apiVersion: livepolicy.io/v1alpha1
kind: MigrationPolicy
metadata:
  name: p2
spec:
  priority: high
---
apiVersion: livepolicy.io/v1alpha1
kind: MigrationPolicy
metadata:
  name: p3
spec:
  sources:
    templates: [broken]
""",
    "more.yaml": """\
apiVersion: livepolicy.io/v1alpha1
kind: MigrationPolicy
metadata:
  name: p1
spec:
  sources: {cordoned: true}
  colour: blue
---
apiVersion: livepolicy.io/v1alpha1
kind: MigrationPolicy
metadata:
  name: p4
spec:
  sources: {cordoned: true}
  placement: random
  placement: spread
""",
    "settings.yaml": """\
apiVersion: livepolicy.io/v1alpha1
kind: Settings
metadata: {name: default}
spec:
  maxParallel: 0
---
apiVersion: livepolicy.io/v1alpha1
kind: Settings
metadata: {name: other}
""",
}


def test_validate_reports_every_problem_in_the_first_run(tmp_path: Path) -> None:
    """The whole multi-file corpus in one run: exactly these problems, each located at
    file:line:col with its JSON pointer, none left for a second run, none made up."""
    for name, text in ONE_PASS_FILES.items():
        (tmp_path / name).write_text(text)
    r = CliRunner().invoke(cli, ["validate", "--json", str(tmp_path)])
    assert r.exit_code == 1, r.output
    diags = json.loads(r.output)["diagnostics"]
    got = [(Path(d["file"]).name, d["pointer"], d["message"]) for d in diags]
    for want in ONE_PASS:
        assert any(g[:2] == want[:2] and want[2] in f"[{d['code']}] {g[2]}"
                   for g, d in zip(got, diags, strict=True)), (want, got)
    assert len(got) == len(ONE_PASS), got
    assert all(d["line"] >= 1 and d["col"] >= 1 for d in diags), diags
    lines = {(Path(d["file"]).name, d["pointer"]): d["line"] for d in diags}
    assert lines[("templates.yaml", "")] == 4  # the YAML error, where it is
    assert lines[("templates.yaml", "/spec/runtime/minVersion")] == 14  # after it
    assert lines[("more.yaml", "")] == 16
    plain = CliRunner().invoke(cli, ["validate", "--no-color", str(tmp_path)])
    assert f"{len(ONE_PASS)} problem(s) found." in plain.output
    assert "unknown NodeTemplate 'broken'" not in plain.output


FIXES = {  # one edit per reported problem
    "templates.yaml": [("{name: early", "{name: early}"),
                       ("spec: {}", "spec: {architecture: amd64, instanceFamilies: [c5]}"),
                       ("architecture: any", "architecture: amd64"),
                       ("minVersion: two", "minVersion: '2.0'"),
                       ("name: broken\nspec:\n  architecture: amd64\n",
                        "name: broken\nspec:\n  architecture: amd64\n  instanceFamilies: [c5]\n")],
    "policies.yaml": [("name: p1", "name: p0"), (", ghost", ""), ("fast", "1Gbps"),
                      ("99 * * * *", "0 2 * * *"), ("2 hours", "2h"),
                      ("Nowhere/City", "Europe/Berlin"),
                      ("priority: high", "priority: 1\n  sources: {cordoned: true}")],
    "more.yaml": [("  colour: blue\n", ""), ("  placement: random\n", "")],
    "settings.yaml": [("maxParallel: 0", "maxParallel: 2"),
                      ("---\napiVersion: livepolicy.io/v1alpha1\nkind: Settings\nmetadata: "
                       "{name: other}\n", "")],
}


def test_fixing_what_was_reported_leaves_nothing(tmp_path: Path) -> None:
    """Fixing exactly the reported problems gives a valid set: nothing was hidden."""
    for name, original in ONE_PASS_FILES.items():
        text = original
        for old, new in FIXES[name]:
            assert old in text, (name, old)
            text = text.replace(old, new)
        (tmp_path / name).write_text(text)
    r = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert r.exit_code == 0, r.output
