"""The command line as users run it: exit codes, located errors, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from livepolicy.cli.main import cli
from tests.conftest import ROOT

BASIC = "tests/cases/basic/cluster.yaml"
BASIC_POL = "tests/cases/basic/policies.yaml"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_plan_detailed_exitcode_reports_changes() -> None:
    r = run("plan", "--cluster", BASIC, "--policies", BASIC_POL, "--detailed-exitcode")
    assert r.exit_code == 2
    assert "Plan: 3 to migrate, 3 blocked" in r.output
    assert "~ shop/db-0  a1 -> a2" in r.output
    assert "[WL006]" in r.output


def test_plan_json_contract(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    r = run("plan", "--cluster", BASIC, "--policies", BASIC_POL, "--json", "--out", str(out))
    assert r.exit_code == 0
    doc = json.loads(r.output)
    assert doc == json.loads(out.read_text())
    assert doc["format_version"] == 2
    assert set(doc["summary"]) >= {"migrations", "blocked", "labels_add", "labels_remove"}
    m = doc["migrations"][0]
    assert {"pod", "from", "to", "policy", "strategy", "estimate"} <= set(m)
    b = doc["blocked"][0]
    assert {"pod", "policy", "reasons"} <= set(b) and {"code", "message"} <= set(b["reasons"][0])
    lab = doc["labels"][0]
    assert set(lab) >= {"pod", "key", "value", "action"} and lab["action"] in ("add", "remove")


def test_show_renders_saved_plan_and_refuses_tampering(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    run("plan", "--cluster", BASIC, "--policies", BASIC_POL, "--out", str(out))
    shown = run("show", str(out))
    assert shown.exit_code == 0 and "Plan: 3 to migrate" in shown.output
    md = run("show", str(out), "--markdown")
    assert md.output.startswith("### livepolicy plan") and "<details>" in md.output
    saved = out.read_text()
    out.write_text(saved.replace('"a2"', '"a3"'))
    bad = run("show", str(out))
    assert bad.exit_code == 1 and "fingerprint mismatch" in bad.output
    out.write_text(saved.replace('"format_version": 2', '"format_version": 1'))
    old = run("show", str(out))  # its hashes mean something else: say so, not "stale"
    assert old.exit_code == 1 and "saved by another livepolicy version" in old.output


def test_no_changes_exit_zero(tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text("apiVersion: livepolicy.io/v1alpha1\nkind: MigrationPolicy\nmetadata:\n"
                   "  name: none\nspec:\n  sources:\n    names: [no-such-node]\n")
    enabled = 'live.cast.ai/migration-enabled: "true"'
    text = (ROOT / BASIC).read_text().replace("labels: {app: web}",
                                              f"labels: {{app: web, {enabled}}}")
    text = text.replace("uid: u4\n", f"uid: u4\n      labels: {{{enabled}}}\n")
    cluster = tmp_path / "c.yaml"
    cluster.write_text(text)
    r = run("plan", "--cluster", str(cluster), "--policies", str(pol), "--detailed-exitcode")
    assert r.exit_code == 0, r.output
    assert "No changes." in r.output


def test_validate_ok_and_json() -> None:
    r = run("validate", "policies")
    assert r.exit_code == 0 and "Success!" in r.output
    j = run("validate", "policies", "--json")
    assert json.loads(j.output)["valid"] is True


BAD_POLICIES = {
    "malformed.yaml": ("kind: [unclosed\n", "invalid YAML"),
    "wrongtype.yaml": ("apiVersion: livepolicy.io/v1alpha1\nkind: MigrationPolicy\nmetadata:\n"
                       "  name: x\nspec:\n  sources: {cordoned: true}\n  priority: high\n",
                       "valid integer"),
    "unknownkind.yaml": ("apiVersion: livepolicy.io/v1alpha1\nkind: Gizmo\nmetadata: {name: g}\n",
                         "unknown kind 'Gizmo'"),
    "missing.yaml": ("apiVersion: livepolicy.io/v1alpha1\nkind: NodeTemplate\nmetadata: "
                     "{name: t}\nspec:\n  architecture: amd64\n", "missing required field "
                     "'instanceFamilies'"),
    "notes.txt": ("hello\n", "unknown file in policy directory"),
    "badref.yaml": ("apiVersion: livepolicy.io/v1alpha1\nkind: MigrationPolicy\nmetadata:\n"
                    "  name: r\nspec:\n  sources: {templates: [ghost]}\n  windows:\n"
                    "    - {schedule: '99 * * * *', duration: 1h, timeZone: Nowhere/City}\n",
                    "unknown NodeTemplate 'ghost'"),
    "any.yaml": ("apiVersion: livepolicy.io/v1alpha1\nkind: NodeTemplate\nmetadata: {name: a}\n"
                 "spec:\n  architecture: any\n  instanceFamilies: [c5, c3]\n", "TPL001"),
    "dup.yaml": ("apiVersion: livepolicy.io/v1alpha1\nkind: MigrationPolicy\nmetadata: {name: r}\n"
                 "spec: {sources: {cordoned: true}}\n", "duplicate MigrationPolicy 'r'"),
}


def test_validate_reports_every_problem_at_once(tmp_path: Path) -> None:
    for name, (text, _) in BAD_POLICIES.items():
        (tmp_path / name).write_text(text)
    r = run("validate", str(tmp_path))
    assert r.exit_code == 1
    for name, (_, expected) in BAD_POLICIES.items():
        lines = [ln for ln in r.output.splitlines() if name in ln]
        assert any(expected in ln for ln in lines), (name, expected, r.output)
    assert "invalid cron expression" in r.output and "unknown time zone" in r.output
    assert "TPL002" in r.output  # c5 with c3
    located = [ln for ln in r.output.splitlines() if ".yaml:" in ln]
    assert all(ln.split(":")[1].isdigit() and ln.split(":")[2].isdigit() for ln in located)
    assert all("(at /" in ln for ln in located)
    assert "Traceback" not in r.output


BAD_SNAPSHOTS = {
    "malformed.yaml": ("items: [\n", "invalid YAML", None),
    "malformed.json": ('{"items": [1,, 2]}', "invalid JSON", None),
    "notalist.yaml": ("- 1\n- 2\n", "expected a Kubernetes object", "/0"),
    "unknownkind.yaml": ("apiVersion: v1\nkind: List\nitems:\n  - {apiVersion: v1, kind: "
                         "Service, metadata: {name: s}}\n", "unknown kind 'Service'",
                         "/items/0/kind"),
    "nameless.yaml": ("apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Node\n"
                      "    metadata: {labels: {}}\n", "node has no name", "/items/0/metadata/name"),
    "badqty.yaml": ("apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Node\n"
                    "    metadata: {name: n}\n    status:\n      allocatable: {cpu: lots, "
                    "memory: 1Gi}\n", "invalid CPU quantity 'lots'",
                    "/items/0/status/allocatable/cpu"),
    "orphan.json": (json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d"},
         "spec": {"nodeName": "ghost", "containers": [{"name": "c"}]}}]}),
        "unknown node 'ghost'", "/items/0/spec/nodeName"),
}


@pytest.mark.parametrize("name", sorted(BAD_SNAPSHOTS))
def test_bad_snapshots_give_located_errors(name: str, tmp_path: Path) -> None:
    text, expected, pointer = BAD_SNAPSHOTS[name]
    path = tmp_path / name
    path.write_text(text)
    r = run("plan", "--cluster", str(path), "--policies", "policies")
    assert r.exit_code == 1
    first = r.output.splitlines()[0]
    assert first.startswith(f"{path}:"), first
    assert expected in first
    if pointer:
        assert f"(at {pointer})" in first
    line = int(first.split(":")[1])
    assert line >= 1


def test_bad_snapshot_json_errors_are_located_in_json(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{\n  "apiVersion": "v1",\n  "kind": "List",\n  "items": [\n    {"kind": '
                    '"Node", "apiVersion": "v1", "metadata": {"name": "n"},\n     "status": '
                    '{"allocatable": {"memory": "x"}}}\n  ]\n}\n')
    r = run("plan", "--cluster", str(path), "--policies", "policies")
    assert r.exit_code == 1
    assert f"{path}:6:" in r.output and "invalid memory quantity" in r.output


def test_missing_snapshot_file() -> None:
    r = run("plan", "--cluster", "nope.yaml", "--policies", "policies")
    assert r.exit_code == 1 and "no such snapshot file" in r.output


DEEP = {  # 30,000 levels each: spellings that hid levels from a scan of the brackets
    "flow": "[" * 30_000 + "]" * 30_000,
    "quoted brackets": '["]", ' * 30_000 + "]" * 30_000,
    "commented brackets": "[ # ]\n" * 30_000 + "]" * 30_000,
    "explicit keys": "? " * 30_000 + "x",
}


@pytest.mark.parametrize(("where", "shape"), [("snapshot", s) for s in sorted(DEEP)] +
                         [("policy", "flow")])
def test_deeply_nested_yaml_is_a_located_error_not_a_crash(where: str, shape: str,
                                                           tmp_path: Path) -> None:
    """Tens of thousands of levels overflowed the C loader's stack (a segfault) and the
    pure loader's recursion limit (a traceback); both are now one located problem."""
    deep = DEEP[shape]
    (tmp_path / "pol").mkdir()
    snapshot, policy = tmp_path / "c.yaml", tmp_path / "pol" / "p.yaml"
    snapshot.write_text(f"kind: List\nitems:\n- {deep}\n" if where == "snapshot" else
                        "kind: List\nitems: []\n")
    policy.write_text("apiVersion: livepolicy.io/v1alpha1\nkind: MigrationPolicy\n"
                      f"metadata: {{name: x}}\nspec: {deep}\n" if where == "policy" else
                      (ROOT / "policies" / "migrations.yaml").read_text())
    proc = subprocess.run([sys.executable, "-m", "livepolicy", "plan", "--cluster",
                           str(snapshot), "--policies", str(policy.parent)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stderr[-500:]
    bad = snapshot if where == "snapshot" else policy
    assert f"{bad}:1:1: invalid YAML: nested too deeply to read" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_console_script_never_tracebacks(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("apiVersion: livepolicy.io/v1alpha1\nkind: MigrationPolicy\n")
    proc = subprocess.run([sys.executable, "-m", "livepolicy", "validate", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "missing required field 'metadata'" in proc.stderr


def test_explain_pod_and_nodes() -> None:
    r = run("explain", "pod", "shop/shell", "--cluster", BASIC, "--policies", BASIC_POL)
    assert r.exit_code == 0
    assert "BLOCK WL006" in r.output and "ok    WL003" in r.output
    j = json.loads(run("explain", "pod", "shop/db-0", "--cluster", BASIC, "--policies",
                       BASIC_POL, "--json").output)
    assert j["policy"] == "drain-cordoned" and j["destinations"]["accepting_volumes"] == 2
    n = run("explain", "nodes", "a1", "old-c3", "--cluster", BASIC, "--policies", BASIC_POL)
    assert "may NOT" in n.output and "BLOCK PR003" in n.output
    ok = run("explain", "nodes", "a1", "a2", "--cluster", BASIC, "--policies", BASIC_POL)
    assert "a pod may live-migrate from a1 to a2" in ok.output
    missing = run("explain", "pod", "shop/nope", "--cluster", BASIC, "--policies", BASIC_POL)
    assert missing.exit_code == 1 and "not found" in missing.output


def test_graph_exports() -> None:
    dot = run("graph", "--cluster", BASIC, "--policies", BASIC_POL, "--format", "dot")
    assert dot.output.startswith("digraph livepolicy")
    j = json.loads(run("graph", "--cluster", BASIC, "--policies", BASIC_POL, "--format",
                       "json").output)
    assert {n["name"] for n in j["nodes"]} == {"a1", "a2", "a3", "b1", "old-c3", "arm1"}


@pytest.mark.parametrize(("command", "code"), [
    (["plan", "--cluster", BASIC, "--policies", BASIC_POL], 0),
    (["show", "{plan}"], 0),
    (["apply", "--cluster", "{cluster}", "--policies", BASIC_POL, "--agents", "sim", "--yes",
      "--sim-time-scale", "0.001", "--state-dir", "{state}"], 0),
    (["plan", "--cluster", "no-such-cluster.yaml", "--policies", BASIC_POL], 1),  # red
], ids=["plan", "show", "apply", "error"])
def test_no_color_removes_every_escape_code(tmp_path: Path, command: list[str],
                                            code: int) -> None:
    """`--no-color` (issue 11): with colours forced on (FORCE_COLOR, as on a terminal),
    the command's output carries escape codes; with --no-color, none on either stream
    (not even the progress display's cursor controls)."""
    plan = tmp_path / "plan.json"
    plan.write_text(run("plan", "--cluster", BASIC, "--policies", BASIC_POL, "--json").stdout)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text((ROOT / BASIC).read_text())
    args = [a.format(plan=plan, cluster=cluster, state=tmp_path / "state") for a in command]
    env = {"PATH": "/usr/bin:/bin", "FORCE_COLOR": "1", "COLUMNS": "120"}

    def output(*extra: str) -> str:
        r = subprocess.run([sys.executable, "-m", "livepolicy", *args, *extra], cwd=ROOT,
                           capture_output=True, text=True, env=env, timeout=120, check=False)
        assert r.returncode == code, r.stdout + r.stderr
        return r.stdout + r.stderr

    if command[0] != "apply":  # apply once only: a second run would have nothing to do
        assert "\x1b[" in output()
    plain = output("--no-color")
    assert plain.strip() and "\x1b" not in plain, plain
    if command[0] == "apply":
        assert "[simulated] Apply complete! 3 migrated" in plain


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += leaf_commands(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


# `agent` hands its arguments to the agent's own parser and prints JSON logs.
NOT_CLICK = {("agent",)}


def test_every_command_takes_no_color() -> None:
    """Issue 11: `--no-color` on every command that prints, not only plan/show/apply."""
    missing = []
    for path in leaf_commands(cli):
        if path in NOT_CLICK:
            continue
        command: click.Command = cli
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        if "--no-color" not in {o for p in command.params for o in p.opts}:
            missing.append(" ".join(path))
    assert not missing, missing
    assert len(leaf_commands(cli)) >= 20


@pytest.mark.parametrize(("command", "code", "styled"), [
    (["validate", "{bad}"], 1, True),
    (["validate", "policies"], 0, False),
    (["fmt", "--check", "{missing}"], 1, True),
    (["schema", "--check", "--out", "{empty}"], 1, True),
    (["rules"], 0, False),
    (["explain", "pod", "a/b", "--cluster", "{missing}", "--policies", BASIC_POL], 1, True),
    (["explain", "nodes", "a1", "a2", "--cluster", BASIC, "--policies", "{bad}"], 1, True),
    (["graph", "--cluster", "{missing}", "--policies", BASIC_POL], 1, True),
    (["snapshot", "--cluster", BASIC], 1, True),
    (["label", "--cluster", BASIC, "--policies", BASIC_POL], 1, True),
    (["controller"], 1, True),
    (["lab", "status"], 1, False),
    (["lab", "snapshot"], 1, False),
], ids=lambda v: "-".join(v) if isinstance(v, list) else None)
def test_no_color_on_every_printing_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            command: list[str], code: int,
                                            styled: bool) -> None:
    """With colours forced on, a command that styles its output (errors in red) writes
    escape codes; with --no-color, none, on either stream, and the same exit code."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "p.yaml").write_text(BAD_POLICIES["wrongtype.yaml"][0])
    (tmp_path / "empty").mkdir()
    args = [a.format(bad=tmp_path / "bad", missing=tmp_path / "missing.yaml",
                     empty=tmp_path / "empty") for a in command]
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("LIVEPOLICY_LAB_DIR", str(tmp_path / "no-lab"))

    def output(*extra: str) -> str:
        r = CliRunner().invoke(cli, [*args, *extra])
        assert r.exit_code == code, (r.output, r.exception)
        return r.stdout + r.stderr

    colored = output()
    assert ("\x1b[" in colored) == styled, colored
    plain = output("--no-color")
    assert plain.strip() and "\x1b" not in plain, plain
    if styled:
        assert plain == re.sub(r"\x1b\[[0-9;]*m", "", colored)
