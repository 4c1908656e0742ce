"""The typed JSON decoder (facts/kubetyped) gives exactly the generic path's facts, or
steps aside (None) so the generic path reports the problems, located.

Checked on every golden case and the example, on hand-picked spellings the raw-bytes memos
must not be fooled by, and on snapshots hypothesis edits at random places.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from livepolicy.core.diagnostics import DiagnosticError
from livepolicy.core.yamlsrc import load_fast
from livepolicy.facts.kubeobjects import build_facts
from livepolicy.facts.kubetyped import typed_facts
from livepolicy.facts.model import ClusterFacts
from livepolicy.facts.snapshot import SnapshotSource
from tests.test_snapshot_fuzz import EDITS, _example, edited_example

CASES = [*sorted(Path("tests/cases").glob("*/cluster.yaml")), Path("examples/cluster.yaml")]


def _generic(items: list[Any], source: str = "s.json"
             ) -> tuple[ClusterFacts, list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    facts = build_facts(items, lambda p, m: problems.append((p, m)), source=source)
    return facts, problems


def _agree(items: list[Any]) -> ClusterFacts | None:
    """Both paths on the same JSON bytes: equal facts, or typed None when problems exist."""
    data = json.dumps({"apiVersion": "v1", "kind": "List", "items": items},
                      allow_nan=False).encode() if _has_big_int(items) else orjson.dumps(
        {"apiVersion": "v1", "kind": "List", "items": items})
    typed = typed_facts(data, "s.json")
    facts, problems = _generic(orjson.loads(data)["items"])
    if problems:
        assert typed is None, problems
    elif typed is not None:
        assert typed == facts
    return typed


def _has_big_int(v: Any) -> bool:
    """orjson cannot write integers beyond 64 bits; the json module can."""
    if isinstance(v, dict):
        return any(_has_big_int(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_big_int(x) for x in v)
    return isinstance(v, int) and not -2**63 <= v < 2**64


@pytest.mark.parametrize("path", CASES, ids=lambda p: str(p.parent))
def test_typed_path_takes_every_case_and_agrees(path: Path) -> None:
    items = load_fast(path)["items"]
    typed = _agree(items)
    assert typed is not None and len(typed.pods) > 0


def test_snapshot_source_uses_it_and_falls_back_for_located_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = copy.deepcopy(_example()[0])
    good = tmp_path / "good.json"
    good.write_bytes(orjson.dumps({"kind": "List", "items": items}))
    expected = _generic(items, str(good))[0]
    with monkeypatch.context() as m:  # a good JSON snapshot never reaches the generic path
        m.setattr("livepolicy.facts.snapshot.build_facts", lambda *a, **k: pytest.fail("generic"))
        assert SnapshotSource(good).read() == expected
    node = next(o for o in items if o["kind"] == "Node")
    node["status"]["allocatable"]["cpu"] = "lots"
    pod = next(o for o in items if o["kind"] == "Pod")
    pod["spec"]["containers"][0]["resources"] = {"requests": {"memory": "x"}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "List", "items": items}, indent=1))
    with pytest.raises(DiagnosticError) as err:
        SnapshotSource(bad).read()
    messages = [(d.message, d.line) for d in err.value.diagnostics]
    assert any("invalid CPU quantity" in m and line for m, line in messages)
    assert any("invalid memory quantity" in m and line for m, line in messages)


def _pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"nodeName": "", "containers": [{"name": "c"}], **spec}}


SPELLINGS: dict[str, list[Any]] = {
    "own annotations": [{**_pod(), "metadata": {
        "name": "p", "annotations": {"livepolicy.io/memory-usage": "1Gi", "other": "x"}}}],
    "null fields": [_pod(priorityClassName=None, priority=None, tolerations=None,
                         nodeSelector=None, affinity=None, overhead=None, hostNetwork=None)],
    "unknown volume sources": [_pod(volumes=[{"name": "a", "csi": {"driver": "d"}},
                                             {"name": "b", "cinder": {}, "secret": {}},
                                             {"name": "c"}, "not-a-volume"])],
    "reordered keys": [{"spec": {"containers": [{"resources": {"limits": {"cpu": "1"}},
                                                 "name": "c"}]},
                        "metadata": {"namespace": "ns", "name": "p"}, "kind": "Pod"}],
    "unknown fields": [{**_pod(), "extra": [1, {"a": None}], "status": {"phase": "Running",
                                                                       "podIP": "10.0.0.1"}}],
    # orjson reads integers beyond 64 bits as floats, msgspec as ints: both paths must
    # read what orjson reads, wherever the number is.
    # (Quantities that large are problems on both paths: see test_snapshot_fuzz.)
    "big integers": [_pod(priority=2**70, priorityClassName=2**70, hostNetwork=2**70,
                          containers=[{"name": "c", "tty": 2**70, "stdin": -(2**70)}]),
                     {"kind": "Node", "metadata": {"name": "n", "labels": {"a": "b"}},
                      "spec": {"unschedulable": 2**70}}],
    "numbers where strings belong": [{**_pod(), "metadata": {"name": "p", "namespace": 7,
                                                             "uid": 1.5}}],
}


@pytest.mark.parametrize("name", sorted(SPELLINGS))
def test_spellings_agree(name: str) -> None:
    typed = _agree(SPELLINGS[name])
    # Pod fields read as they are must be strings: anything else goes the generic way.
    assert (typed is None) == (name == "numbers where strings belong")


def test_escaped_annotation_prefix_is_read() -> None:
    data = orjson.dumps({"kind": "List", "items": SPELLINGS["own annotations"]})
    data = data.replace(b"livepolicy.io/memory", b"livepolicy.io\\/memory")
    typed = typed_facts(data, "s.json")
    assert typed is not None and typed.pods[0].memory_usage_bytes == 2**30


@pytest.mark.parametrize("doc", [[_pod()], {"kind": "Pod", **_pod()},
                                 {"kind": "List", "items": [{"kind": "Widget"}]},
                                 {"kind": "List", "items": [_pod(containers=[])]},
                                 {"kind": "List", "items": [_pod(), _pod()]}],
                         ids=["bare list", "one object", "unknown kind", "no containers",
                              "duplicate pod"])
def test_other_shapes_and_problems_step_aside(doc: Any) -> None:
    assert typed_facts(orjson.dumps(doc), "s.json") is None


def _pod_bytes(extra: bytes) -> bytes:
    return (b'{"kind": "List", "items": [{"kind": "Node", "metadata": {"name": "n"}}, '
            b'{"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": {'
            b'"nodeName": "n", "containers": [{"name": "c"}]}' + extra + b'}]}')


@pytest.mark.parametrize("extra", [b', "status": {"phase": "Run\xffning"}',
                                   b', "junk": "\xff"', b', "\xff": 1'],
                         ids=["kept string", "skipped string", "key"])
def test_invalid_utf8_anywhere_is_reported_as_before(extra: bytes, tmp_path: Path) -> None:
    """msgspec checks only the strings it keeps; the file is refused wherever the byte is."""
    path = tmp_path / "s.json"
    path.write_bytes(_pod_bytes(extra))
    assert typed_facts(path.read_bytes(), str(path)) is None
    with pytest.raises(DiagnosticError) as err:
        SnapshotSource(path).read()
    assert "not valid UTF-8" in err.value.diagnostics[0].message


def test_numbers_orjson_cannot_read_are_reported_where_livepolicy_reads_them(
        tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(_pod_bytes(b"").replace(b'{"name": "n"}',
                                             b'{"name": "n"}, "status": {"capacity": '
                                             b'{"cpu": 1e400}}'))
    assert typed_facts(path.read_bytes(), str(path)) is None
    with pytest.raises(DiagnosticError) as err:
        SnapshotSource(path).read()
    assert "infinity" in err.value.diagnostics[0].message
    # In a field livepolicy never reads, such a number is skipped (the one difference).
    typed = typed_facts(_pod_bytes(b', "junk": 1e400'), "s.json")
    assert typed is not None and typed.pods[0].name == "p"


def test_an_empty_file_is_an_error_not_an_empty_cluster(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("  \n")
    with pytest.raises(DiagnosticError) as err:
        SnapshotSource(path).read()
    assert err.value.diagnostics[0].message == "the snapshot file is empty"


def test_deep_nesting_steps_aside_and_is_reported(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "deep.json"
    path.write_text('{"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p", '
                    f'"labels": {deep}}}, "spec": {{"containers": [{{"name": "c"}}]}}}}]}}')
    assert typed_facts(path.read_bytes(), str(path)) is None
    with pytest.raises(DiagnosticError) as err:
        SnapshotSource(path).read()
    assert "invalid JSON" in err.value.diagnostics[0].message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EDITS)
def test_random_edits_agree_or_step_aside(edits: list[tuple[int, int, Any]]) -> None:
    _agree(edited_example(edits))
