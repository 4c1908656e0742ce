"""The JSON Schemas reject what `livepolicy validate` rejects, wherever JSON Schema can say it.

A corpus of bad policy documents, one problem each: `validate` must report it (with its
message, at its pointer), and the checked-in schemas/*.json must reject the document
too, both the kind's own schema and the combined livepolicy.json, with an error at or
around the same pointer. The problems JSON Schema cannot express are listed apart, each
with the reason, and the test holds that the schemas really do accept those documents
(so the list stays true).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from referencing import Registry

from livepolicy.cli.main import cli
from tests.conftest import ROOT

API = "livepolicy.io/v1alpha1"
MP: dict[str, Any] = {"apiVersion": API, "kind": "MigrationPolicy", "metadata": {"name": "p"},
                      "spec": {"sources": {"cordoned": True}}}
NT: dict[str, Any] = {"apiVersion": API, "kind": "NodeTemplate", "metadata": {"name": "nt"},
                      "spec": {"architecture": "amd64", "instanceFamilies": ["c5"]}}
ST: dict[str, Any] = {"apiVersion": API, "kind": "Settings", "metadata": {"name": "s"},
                      "spec": {}}
_GONE = object()


def doc(base: dict[str, Any], pointer: str, value: Any = _GONE) -> dict[str, Any]:
    """`base` with the value at `pointer` set (missing parents made), or removed."""
    out = copy.deepcopy(base)
    *parents, last = pointer.lstrip("/").split("/")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    if value is _GONE:
        del node[last]
    else:
        node[last] = value
    return out


@dataclass
class Case:
    docs: list[Any]
    message: str  # what validate says
    pointer: str  # where validate says it


# Problems JSON Schema expresses: the schemas must reject these.
EXPRESSIBLE: dict[str, Case] = {
    "bad-duration": Case([doc(MP, "/spec/strategy/freezeBudget", "5 sec")], "not a duration",
                         "/spec/strategy/freezeBudget"),
    "bad-duration-unit": Case([doc(MP, "/spec/sources/olderThan", "90days")],
                              "not a duration", "/spec/sources/olderThan"),
    "bad-window-duration": Case([doc(MP, "/spec/windows", [
        {"schedule": "0 2 * * *", "duration": "2 hours"}])], "not a duration",
        "/spec/windows/0/duration"),
    "bad-bandwidth": Case([doc(MP, "/spec/strategy/bandwidth", "fast")], "not a bandwidth",
                          "/spec/strategy/bandwidth"),
    "bad-dirty-rate": Case([doc(MP, "/spec/strategy/dirtyRate", "50MB")], "not a bandwidth",
                           "/spec/strategy/dirtyRate"),
    "bad-percentage": Case([doc(MP, "/spec/budgets/maxUnavailablePerWorkload", "150%")],
                           "not a count or a percentage",
                           "/spec/budgets/maxUnavailablePerWorkload"),
    "zero-percent": Case([doc(MP, "/spec/budgets/maxUnavailablePerWorkload", "0%")],
                         "not a count or a percentage", "/spec/budgets/maxUnavailablePerWorkload"),
    "zero-count": Case([doc(MP, "/spec/budgets/maxUnavailablePerWorkload", 0)],
                       "must be at least 1", "/spec/budgets/maxUnavailablePerWorkload"),
    "boolean-count": Case([doc(MP, "/spec/budgets/maxUnavailablePerWorkload", True)],
                          "not a boolean", "/spec/budgets/maxUnavailablePerWorkload"),
    "unknown-field": Case([doc(MP, "/spec/colour", "blue")], "unknown field 'colour'",
                          "/spec/colour"),
    "unknown-nested-field": Case([doc(MP, "/spec/strategy/freezeBudgt", "1s")],
                                 "unknown field 'freezeBudgt'", "/spec/strategy/freezeBudgt"),
    "wrong-type": Case([doc(MP, "/spec/priority", "high")], "valid integer", "/spec/priority"),
    "wrong-type-list": Case([doc(MP, "/spec/workloads/namespaces", "default")],
                            "valid tuple", "/spec/workloads/namespaces"),
    "wrong-type-label": Case([doc(MP, "/metadata/labels", {"team": 1})], "valid string",
                             "/metadata/labels/team"),
    "bad-enum": Case([doc(MP, "/spec/placement", "random")], "'binpack' or 'spread'",
                     "/spec/placement"),
    "bad-enum-runtime": Case([doc(NT, "/spec/runtime", {"name": "docker"})],
                             "'containerd'", "/spec/runtime/name"),
    "out-of-range": Case([doc(MP, "/spec/strategy/maxRounds", 99)],
                         "less than or equal to 30", "/spec/strategy/maxRounds"),
    "out-of-range-low": Case([doc(MP, "/spec/budgets/maxParallel", 0)],
                             "greater than or equal to 1", "/spec/budgets/maxParallel"),
    "missing-required": Case([doc(NT, "/spec/instanceFamilies")],
                             "missing required field 'instanceFamilies'",
                             "/spec/instanceFamilies"),
    "missing-metadata": Case([doc(MP, "/metadata")], "missing required field 'metadata'",
                             "/metadata"),
    "empty-list": Case([doc(NT, "/spec/instanceFamilies", [])], "at least 1 item",
                       "/spec/instanceFamilies"),
    "bad-name": Case([doc(MP, "/metadata/name", "Bad_Name")], "must be lowercase",
                     "/metadata/name"),
    "bad-version": Case([doc(NT, "/spec/runtime", {"minVersion": "two"})], "does not match",
                        "/spec/runtime/minVersion"),
    "bad-kubernetes-version": Case([doc(ST, "/spec/minKubernetesVersion", "1")],
                                   "does not match", "/spec/minKubernetesVersion"),
    "architecture-any": Case([doc(NT, "/spec/architecture", "any")], "TPL001",
                             "/spec/architecture"),
    "architecture-unknown": Case([doc(NT, "/spec/architecture", "x86")],
                                 "unknown architecture", "/spec/architecture"),
    "in-without-values": Case([doc(MP, "/spec/workloads/selector", {"matchExpressions": [
        {"key": "app", "operator": "In"}]})], "needs at least one value",
        "/spec/workloads/selector/matchExpressions/0"),
    "exists-with-values": Case([doc(MP, "/spec/workloads/selector", {"matchExpressions": [
        {"key": "app", "operator": "Exists", "values": ["x"]}]})], "takes no values",
        "/spec/workloads/selector/matchExpressions/0"),
    "gt-not-integer": Case([doc(MP, "/spec/workloads/selector", {"matchExpressions": [
        {"key": "gen", "operator": "Gt", "values": ["five"]}]})], "exactly one integer",
        "/spec/workloads/selector/matchExpressions/0"),
    "empty-sources": Case([doc(MP, "/spec/sources", {})], "sources selects no node",
                          "/spec/sources"),
    "empty-sources-selector": Case([doc(MP, "/spec/sources", {"selector": {"matchLabels": {}}})],
                                   "sources selects no node", "/spec/sources"),
    "no-sources": Case([doc(MP, "/spec/sources")], "sources selects no node", "/spec/sources"),
    "cron-field-count": Case([doc(MP, "/spec/windows", [
        {"schedule": "* * * *", "duration": "1h"}])], "invalid cron expression",
        "/spec/windows/0/schedule"),
    "bad-api-version": Case([doc(MP, "/apiVersion", "livepolicy.io/v1")],
                            "unsupported apiVersion", "/apiVersion"),
    "unknown-kind": Case([doc(MP, "/kind", "Gizmo")], "unknown kind 'Gizmo'", "/kind"),
    "missing-kind": Case([doc(MP, "/kind")], "missing required field 'kind'", ""),
    "not-a-mapping": Case([[1, 2]], "must be a mapping", ""),
}

# Problems JSON Schema cannot express, and why; the schemas accept each of these documents.
INEXPRESSIBLE: dict[str, tuple[Case, str]] = {
    "cron-field-values": (Case([doc(MP, "/spec/windows", [
        {"schedule": "99 * * * *", "duration": "1h"}])], "invalid cron expression",
        "/spec/windows/0/schedule"),
        "what each cron field may hold is croniter's grammar (ranges, steps, names, "
        "extensions); the schema checks the five fields"),
    "unknown-time-zone": (Case([doc(MP, "/spec/windows", [
        {"schedule": "0 2 * * *", "duration": "1h", "timeZone": "Nowhere/City"}])],
        "unknown time zone", "/spec/windows/0/timeZone"),
        "the time zones are those of the tz database where validate runs, not a fixed list"),
    "unknown-template": (Case([doc(MP, "/spec/sources", {"templates": ["ghost"]})],
                              "unknown NodeTemplate 'ghost'", "/spec/sources/templates/0"),
                         "cross-document: the template is defined, or not, in another document"),
    "duplicate-name": (Case([MP, MP], "duplicate MigrationPolicy 'p'", "/metadata/name"),
                       "cross-document: names are unique across all files"),
    "two-settings": (Case([ST, doc(ST, "/metadata/name", "t")],
                          "only one Settings object is allowed", "/kind"),
                     "cross-document: at most one Settings across all files"),
    "unknown-instance-family": (Case([doc(NT, "/spec/instanceFamilies", ["nope"])],
                                     "unknown instance family 'nope'",
                                     "/spec/instanceFamilies/0"),
                                "TPL002: the instance-family catalogue, extended by the "
                                "Settings' generationSets (another document)"),
    "mixed-generations": (Case([doc(NT, "/spec/instanceFamilies", ["c5", "c3"])],
                               "generation sets", "/spec/instanceFamilies"),
                          "TPL002: generation sets come from the catalogue and the Settings"),
}


def schema(name: str) -> jsonschema.Draft202012Validator:
    """A validator of a checked-in schema that can fetch nothing (an empty registry)."""
    contents = json.loads((ROOT / "schemas" / name).read_text())
    return jsonschema.Draft202012Validator(contents, registry=Registry())


def schema_errors(document: Any, kind_schema: bool) -> list[jsonschema.ValidationError]:
    name = "livepolicy.json"
    if kind_schema:
        if not (isinstance(document, dict) and document.get("kind") in (
                "MigrationPolicy", "NodeTemplate", "Settings")):
            return []
        name = f"{document['kind'].lower()}.json"
    return list(schema(name).iter_errors(document))


def validate(tmp_path: Path, case: Case) -> list[dict[str, Any]]:
    """`livepolicy validate --json` on the case's documents (one file, beside a template
    the policies may name)."""
    (tmp_path / "case.yaml").write_text("\n---\n".join(json.dumps(d) for d in case.docs))
    if not any(isinstance(d, dict) and d.get("kind") == "NodeTemplate" for d in case.docs):
        (tmp_path / "base.yaml").write_text(json.dumps(NT))
    r = CliRunner().invoke(cli, ["validate", "--json", str(tmp_path)])
    assert r.exit_code == 1, r.output
    diags: list[dict[str, Any]] = json.loads(r.output)["diagnostics"]
    return diags


def reported(diags: list[dict[str, Any]], case: Case) -> bool:
    return any(case.message in f"[{d.get('code', '')}] {d['message']}"
               and d["pointer"] == case.pointer
               and d["file"].endswith("case.yaml") and d["line"] >= 1 for d in diags)


def pointer(error: jsonschema.ValidationError) -> str:
    return "".join(f"/{p}" for p in error.absolute_path)


def related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/") or not a or not b


@pytest.mark.parametrize("name", sorted(EXPRESSIBLE))
def test_the_schemas_reject_what_validate_rejects(name: str, tmp_path: Path) -> None:
    case = EXPRESSIBLE[name]
    diags = validate(tmp_path, case)
    assert reported(diags, case), (name, diags)
    assert any(schema_errors(d, kind_schema=False) for d in case.docs), \
        f"{name}: livepolicy.json accepts a document validate rejects"
    by_kind = [e for d in case.docs for e in schema_errors(d, kind_schema=True)]
    if isinstance(case.docs[0], dict) and case.docs[0].get("apiVersion") == API and \
            case.docs[0].get("kind") in ("MigrationPolicy", "NodeTemplate", "Settings"):
        assert by_kind, f"{name}: the kind's schema accepts a document validate rejects"
        assert any(related(pointer(e), case.pointer)
                   for e in by_kind), (name, [(e.json_path, e.message) for e in by_kind])


@pytest.mark.parametrize("name", sorted(INEXPRESSIBLE))
def test_what_json_schema_cannot_express_is_listed(name: str, tmp_path: Path) -> None:
    case, reason = INEXPRESSIBLE[name]
    assert reason
    assert reported(validate(tmp_path, case), case), name
    for d in case.docs:
        assert not schema_errors(d, kind_schema=False), name
        assert not schema_errors(d, kind_schema=True), name


def test_the_corpus_covers_the_kinds_of_problem_the_issue_names() -> None:
    """Issue 11 counted nine kinds of error; each has at least one case."""
    kinds = ("bad-duration", "bad-bandwidth", "bad-percentage", "unknown-field", "wrong-type",
             "bad-enum", "out-of-range", "missing-required", "bad-name")
    assert all(k in EXPRESSIBLE for k in kinds)
