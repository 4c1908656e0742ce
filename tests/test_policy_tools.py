"""fmt keeps comments and is idempotent; JSON Schemas in schemas/ never drift."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_shipped_policies_validate_against_the_json_schemas() -> None:
    import jsonschema
    from referencing import Registry, Resource
    from ruamel.yaml import YAML

    all_schemas = schemas()
    registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in all_schemas.values())
    validator = jsonschema.Draft202012Validator(all_schemas["livepolicy.json"],
                                                registry=registry)
    yaml = YAML(typ="safe")
    for path in sorted((ROOT / "policies").glob("*.yaml")):
        for doc in yaml.load_all(path.read_text()):
            errors = list(validator.iter_errors(doc))
            assert not errors, (path, [e.message for e in errors][:3])
    bad = {"apiVersion": "livepolicy.io/v1alpha1", "kind": "MigrationPolicy",
           "metadata": {"name": "x"}, "spec": {"colour": "blue"}}
    assert list(validator.iter_errors(bad))
