"""The schemas work offline, and every shipped policy file's modeline finds its schema.

Each schema in schemas/ is one self-contained file: `$ref`s point into its own `$defs`
and there is no `$id` against which a relative reference would be fetched, so an editor,
`check-jsonschema` (pre-commit) or a copy of one file in another repository needs no
network. A modeline names a schema relative to the file it is in, and applies to every
document of the file: a file of several documents names the combined livepolicy.json.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from ruamel.yaml import YAML

from livepolicy.policy.schema import COMBINED, schemas
from tests.conftest import ROOT

POLICY_SCHEMAS = sorted(schemas())
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")
EXAMPLES = ROOT / "examples" / "policies"
POLICY_FILES = sorted([*EXAMPLES.glob("*.yaml"),
                       *(ROOT / "policies").glob("*.yaml")])


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "schemas" / name).read_text())
    return data


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


@pytest.mark.parametrize("name", POLICY_SCHEMAS)
def test_every_ref_resolves_inside_its_own_file(name: str) -> None:
    schema = load(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "$id" not in schema, "an $id would make relative $refs resolve against a URL"
    found = refs(schema)
    assert found, name
    # A registry with nothing in it and nothing to fetch from: a reference that left the
    # file would raise Unresolvable.
    resolver = Registry().resolver_with_root(DRAFT202012.create_resource(schema))
    for ref in found:
        assert ref.startswith("#/$defs/"), ref
        assert resolver.lookup(ref).contents == schema["$defs"][ref.removeprefix("#/$defs/")]


def documents(path: Path) -> list[Any]:
    return [d for d in YAML(typ="safe").load_all(path.read_text()) if d is not None]


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modeline_names_an_existing_schema_that_every_document_satisfies(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    m = MODELINE.match(first)
    assert m, f"{path.name}: first line must be a yaml-language-server modeline: {first!r}"
    target = (path.parent / m.group(1)).resolve()
    assert target.is_file(), f"{path.name}: {m.group(1)} does not exist"
    assert target.parent == ROOT / "schemas" and target.name in POLICY_SCHEMAS, target
    docs = documents(path)
    kinds = {d["kind"] for d in docs}
    if len(kinds) > 1 or (path.is_relative_to(EXAMPLES) and len(docs) > 1):
        assert target.name == COMBINED, f"{path.name}: several documents need {COMBINED}"
    validator = jsonschema.Draft202012Validator(json.loads(target.read_text()),
                                                registry=Registry())
    for i, d in enumerate(docs):
        errors = [e.message for e in validator.iter_errors(d)]
        assert not errors, (path.name, i, errors[:3])


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run([str(exe), "--no-cache", "--schemafile", str(ROOT / "schemas" / schema),
                           *map(str, files)], capture_output=True, text=True, timeout=120,
                          check=False, env={"PATH": "/usr/bin:/bin", "HTTPS_PROXY": "http://0.0.0.0:9",
                                            "HTTP_PROXY": "http://0.0.0.0:9"})


def test_check_jsonschema_validates_policies_offline(tmp_path: Path) -> None:
    """As the pre-commit hook of docs/gitops.md runs it (one document per file: it reads
    no multi-document YAML), with every proxy pointing nowhere."""
    singles: dict[str, list[Path]] = {}
    for path in POLICY_FILES:
        for i, d in enumerate(documents(path)):
            out = tmp_path / f"{path.parent.name}-{path.stem}-{i}.yaml"
            out.write_text(json.dumps(d))
            singles.setdefault(d["kind"], []).append(out)
    everything = [p for group in singles.values() for p in group]
    ok = check_jsonschema(COMBINED, *everything)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for kind, files in singles.items():
        r = check_jsonschema(f"{kind.lower()}.json", *files)
        assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: livepolicy.io/v1alpha1\nkind: MigrationPolicy\nmetadata: "
                   "{name: p}\nspec:\n  sources: {cordoned: true}\n  strategy: "
                   "{freezeBudget: 5 sec}\n")
    for schema in (COMBINED, "migrationpolicy.json"):
        r = check_jsonschema(schema, bad)
        assert r.returncode == 1 and "5 sec" in r.stdout, r.stdout + r.stderr
