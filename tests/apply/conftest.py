"""Apply tests: real `sim` agent processes over loopback HTTP, on copies of the basic case.

Three ways in:
- `Case.cli(...)` runs `python -m livepolicy ...` in the case directory, exactly as a
  user would (the contract, SIGKILL and lock tests: they need a process of their own);
- `Case.invoke(...)` runs the same command in-process through click's runner (no
  interpreter start-up) where a process of its own proves nothing more;
- `rig(...)` plans in-process, starts the production launcher (`LocalSimAgents`) for the
  nodes the plan uses (or takes a pool shared by several tests) and wires an `Engine` to
  it, so a test can arm faults on the agents before it runs (fault matrix, dependencies).

Every test gets its own copy of the case (apply rewrites the snapshot) and its own state
directory. An autouse fixture kills whatever process a test leaves behind (a SIGKILLed
apply orphans its agents: they run in their own session) and fails the test if a run that
was not killed left any.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from livepolicy.apply.cluster import SnapshotWriter
from livepolicy.apply.engine import ApplyResult, Engine, EngineOptions
from livepolicy.apply.events import CallbackSink, Event, EventSink, ListSink
from livepolicy.apply.journal import Journal
from livepolicy.apply.local_agents import LocalSimAgents
from livepolicy.cli.common import load_facts, load_policies, resolve_now
from livepolicy.cli.main import cli
from livepolicy.facts.model import ClusterFacts
from livepolicy.planner.plan import make_plan
from livepolicy.planner.serialize import plan_document

ROOT = Path(__file__).resolve().parents[2]
BASIC = ROOT / "tests" / "cases" / "basic"
EVENT_KEYS = {"@level", "@message", "@timestamp", "type"}
# The basic case: the three planned migrations, all off the cordoned node a1.
PLANNED = {"shop/web-5d8f-aaaaa": "a3", "shop/web-5d8f-bbbbb": "a3", "shop/db-0": "a2"}
FIRST = "m00001"  # shop/web-5d8f-aaaaa a1 -> a3; m00002 and m00003 depend on it


# -- processes --------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def processes_of(root: Path) -> list[int]:
    """Live processes started for `root`: its path on their command line or as their cwd."""
    needle = os.fsencode(str(root))
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes()
            cwd = os.fsencode(os.readlink(d / "cwd"))
        except OSError:
            continue
        if (needle in cmdline or cwd.startswith(needle)) and _alive(int(d.name)):
            out.append(int(d.name))
    return out


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


@dataclass
class Strays:
    """What the autouse fixture checks: set `expected` when a test kills apply on purpose."""

    root: Path
    expected: bool = False


@pytest.fixture(autouse=True)
def strays(tmp_path: Path) -> Iterator[Strays]:
    s = Strays(tmp_path)
    yield s
    left = processes_of(tmp_path)
    kill_all(left)
    if not s.expected:
        assert not left, f"processes left running: {left}"


# -- a case directory -------------------------------------------------------------------
@dataclass
class Case:
    dir: Path

    @property
    def cluster(self) -> Path:
        return self.dir / "cluster.yaml"

    @property
    def policies(self) -> Path:
        return self.dir / "policies.yaml"

    @property
    def plan_file(self) -> Path:
        return self.dir / "plan.json"

    @property
    def state(self) -> Path:
        return self.dir / ".livepolicy"

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "livepolicy", *args]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*args), cwd=self.dir, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)

    def invoke(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """The same command in-process (click's runner, in the case directory): no
        interpreter start-up, for everything that does not need a process of its own."""
        with contextlib.chdir(self.dir):
            r = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
        return subprocess.CompletedProcess(["livepolicy", *args], r.exit_code, r.stdout,
                                           r.stderr)

    def plan(self) -> dict[str, Any]:
        """`livepolicy plan --cluster cluster.yaml --policies policies.yaml --out plan.json`."""
        r = self.invoke("plan", "--cluster", "cluster.yaml", "--policies", "policies.yaml",
                        "--out", "plan.json")
        assert r.returncode == 0, r.stderr
        doc: dict[str, Any] = json.loads(self.plan_file.read_text())
        return doc

    def apply_args(self, *extra: str, scale: float = 0.001, timeout: float = 10.0) -> list[str]:
        return ["apply", "plan.json", "--agents", "sim", "--json", "--sim-time-scale",
                str(scale), "--call-timeout", str(timeout), *extra]

    def facts(self) -> ClusterFacts:
        return load_facts(str(self.cluster))

    def edit(self, path: Path, old: str, new: str) -> None:
        text = path.read_text()
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1))


@pytest.fixture
def case(tmp_path: Path) -> Case:
    d = tmp_path / "case"
    d.mkdir()
    for name in ("cluster.yaml", "policies.yaml"):
        shutil.copy(BASIC / name, d / name)
    return Case(d)


# -- events -----------------------------------------------------------------------------
def parse_events(stdout: str, *, complete: bool = True) -> list[Event]:
    """Each line one JSON event with Terraform's keys. A run killed mid-write may end in a
    torn line: with complete=False that last line (no newline) is ignored."""
    lines = stdout.split("\n")
    tail = lines.pop()  # "" after a final newline, else a torn line
    assert complete is False or tail == "", f"unterminated last line: {tail!r}"
    events = []
    for line in lines:
        e = json.loads(line)
        assert isinstance(e, dict) and e.keys() >= EVENT_KEYS, line
        datetime.fromisoformat(e["@timestamp"])
        assert e["@level"] in ("info", "warn", "error"), line
        events.append(e)
    return events


def of_type(events: list[Event], type_: str, mid: str | None = None) -> list[Event]:
    return [e for e in events if e["type"] == type_ and
            (mid is None or e.get("migration", {}).get("id") == mid)]


# -- what the agents say ----------------------------------------------------------------
def pods_on_agents(pool: LocalSimAgents) -> dict[str, list[tuple[str, str]]]:
    """uid -> [(node, state)] over every agent of the pool."""
    out: dict[str, list[tuple[str, str]]] = {}
    for node in pool.agents:
        for p in pool.client(node).list_pods()["pods"]:
            out.setdefault(p["uid"], []).append((node, p["state"]))
    return out


def assert_each_pod_once(pods: dict[str, list[tuple[str, str]]], facts: ClusterFacts,
                         where: dict[str, str]) -> None:
    """Every snapshot pod runs on exactly one agent; `where` maps pod keys to that node."""
    for p in facts.pods:
        assert len(pods.get(p.uid, [])) == 1, f"{p.key}: {pods.get(p.uid)}"
        node, state = pods[p.uid][0]
        assert state == "running", f"{p.key} is {state} on {node}"
        assert node == where.get(p.key, p.node), f"{p.key} is on {node}"
    assert set(pods) == {p.uid for p in facts.pods}


def unfinished_migrations(pool: LocalSimAgents) -> list[tuple[str, str, str]]:
    """(node, mid, phase) of every agent migration record that is neither committed nor
    rolled back: something half-done left behind."""
    return [(node, m["mid"], m["phase"]) for node in pool.agents
            for m in pool.client(node).list_migrations()["migrations"]
            if m["phase"] not in ("committed", "rolled_back")]


@contextlib.contextmanager
def agents_of(case: Case, scale: float = 0.001) -> Iterator[LocalSimAgents]:
    """Start the case's sim agents again (after a CLI apply stopped them) to ask them."""
    pool = LocalSimAgents(case.state, case.facts(), time_scale=scale)
    try:
        pool.start()
        yield pool
    finally:
        pool.stop()


# -- the engine in-process --------------------------------------------------------------
@dataclass
class Rig:
    case: Case
    facts: ClusterFacts
    doc: dict[str, Any]
    pool: LocalSimAgents
    journal: Journal
    options: EngineOptions
    sink: ListSink = field(default_factory=ListSink)
    results: list[ApplyResult] = field(default_factory=list)
    restarts_before: int = 0

    def engine(self, sink: EventSink | None = None) -> Engine:
        return Engine(self.doc, self.pool, self.journal, SnapshotWriter(self.case.cluster),
                      sink or self.sink, self.options)

    def run(self) -> ApplyResult:
        """One apply run (a fresh Engine on the same journal: a re-run recovers)."""
        self.sink.events.clear()
        result = self.engine().run()
        self.results.append(result)
        return result

    def run_and_die(self, at: Callable[[Event], bool]) -> None:
        """A run that dies right after emitting the first event `at` accepts: nothing of
        it runs after that (as if its process were killed there; the agents live on)."""
        self.sink.events.clear()

        def emit(event: Event) -> None:
            self.sink.emit(event)
            if at(event):
                raise Died(event["@message"])

        with pytest.raises(Died):
            self.engine(CallbackSink(emit)).run()

    def mid(self, mid: str = FIRST, attempt: int = 0) -> str:
        return self.engine().agent_mid(mid, attempt)

    def migration(self, mid: str = FIRST) -> dict[str, Any]:
        return next(m for m in self.doc["migrations"] if m["id"] == mid)

    def impatient(self, mid: str = FIRST, timeout: str = "1s") -> dict[str, Any]:
        """Migration `mid`, whose agent calls now time out after `timeout` (its policy's
        progressTimeout, as the engine reads it from the plan)."""
        m = self.migration(mid)
        m["strategy"]["progress_timeout"] = timeout
        return m

    @property
    def planned(self) -> dict[str, str]:
        """pod -> planned destination."""
        return {m["pod"]: m["to"] for m in self.doc["migrations"]}

    def pods(self) -> dict[str, list[tuple[str, str]]]:
        """Where this rig's pods are (a shared pool also holds other tests' pods)."""
        uids = {p.uid for p in self.facts.pods}
        return {uid: at for uid, at in pods_on_agents(self.pool).items() if uid in uids}

    def unfinished(self) -> list[tuple[str, str, str]]:
        prefix = self.mid(FIRST).split(FIRST)[0]
        return [u for u in unfinished_migrations(self.pool) if u[1].startswith(prefix)]

    def restarts(self) -> int:
        return self.pool.restarts - self.restarts_before


class Died(BaseException):
    """Raised through the engine to stop a run dead (no handler catches a BaseException)."""


RigFactory = Callable[..., Rig]
_TAGS = itertools.count(1)


def tag_snapshot(text: str, tag: str) -> str:
    """The same cluster with its pods in their own namespaces and uids, so that several
    tests can share one set of agents without meeting each other's pods."""
    text = re.sub(r"namespace: (shop|kube-system)\b", rf"namespace: \1-{tag}", text)
    return re.sub(r"uid: (u\d+)\b", rf"uid: {tag}-\1", text)


def start_pool(state: Path, facts: ClusterFacts, scale: float = 0.001,
               nodes: set[str] | None = None) -> LocalSimAgents:
    """The production launcher, for `nodes` only (fewer processes to start per test)."""
    pool = LocalSimAgents(state, dataclasses.replace(facts, nodes=tuple(
        n for n in facts.nodes if nodes is None or n.name in nodes)), time_scale=scale)
    pool.start()
    return pool


@pytest.fixture
def rig(case: Case) -> Iterator[RigFactory]:
    """rig(scale=, call_timeout=, recovery_timeout=, now=, edit=, pool=) -> a started Rig.

    Without call_timeout each migration's calls time out after its policy's
    progressTimeout (150 s): set a short one on the migration a test makes hang, so that a
    slow disk on a busy machine cannot time out the others.

    With `pool` (agents shared by several tests) the case's pods get a namespace and uids
    of their own; without, the rig starts agents for the nodes its plan uses."""
    pools: list[LocalSimAgents] = []
    journals: list[Journal] = []

    def make(scale: float = 0.001, call_timeout: float | None = None,
             recovery_timeout: float = 30.0,
             now: datetime | None = None, edit: Callable[[Case], None] | None = None,
             pool: LocalSimAgents | None = None) -> Rig:
        if edit is not None:
            edit(case)
        if pool is not None:
            case.cluster.write_text(tag_snapshot(case.cluster.read_text(), f"t{next(_TAGS)}"))
        facts = case.facts()
        ps = load_policies(str(case.policies))
        doc = plan_document(make_plan(facts, ps, resolve_now(None, facts)))
        if pool is None:
            used = {n for m in doc["migrations"] for n in (m["from"], m["to"])}
            pool = start_pool(case.state, facts, scale, used | {p.node for p in facts.pods})
            pools.append(pool)
        pool.seed(facts)
        journal = Journal(case.state / "runs" / str(doc["fingerprint"])[:16] / "journal.jsonl")
        journals.append(journal)
        opts = EngineOptions(parallelism=10, call_timeout_s=call_timeout,
                             recovery_timeout_s=recovery_timeout)
        if now is not None:
            opts.now = lambda: now
        return Rig(case, facts, doc, pool, journal, opts, restarts_before=pool.restarts)

    yield make
    for pool in pools:
        kill_pool(pool)
    for j in journals:
        j.close()


def kill_pool(pool: LocalSimAgents) -> None:
    """Stop a pool at once (SIGKILL, as a node losing power would): a test is done with
    it, and a graceful stop costs each agent its server's poll interval."""
    pool._stop.set()
    if pool._watcher is not None:
        pool._watcher.join()
    for a in pool.agents.values():
        if a.proc is not None and a.proc.poll() is None:
            a.proc.kill()
    pool.stop()
