"""`apply`, `agent` and `force-unlock`: carry out plans through node agents."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from livepolicy.agent.client import AgentClientError
from livepolicy.apply.agent_table import AgentTable, plan_nodes
from livepolicy.apply.agents_file import StaticAgents
from livepolicy.apply.cluster import NoWriter, SnapshotWriter
from livepolicy.apply.engine import ApplyResult, Engine, EngineOptions
from livepolicy.apply.events import (
    SIMULATED,
    JsonLinesSink,
    ListSink,
    SimulatedSink,
    TeeSink,
    make_event,
    version_event,
)
from livepolicy.apply.journal import Journal
from livepolicy.apply.kube_agents import ADDRESSES, DEFAULT_NAMESPACE, DEFAULT_SELECTOR, KubeAgents
from livepolicy.apply.kube_journal import JournalMirrorError
from livepolicy.apply.local_agents import LocalSimAgents
from livepolicy.apply.lock import LockHeld, StateLock, acquire_within, force_unlock
from livepolicy.apply.metrics import MetricsSink
from livepolicy.apply.stale import stale_reasons
from livepolicy.apply.targets import parse_targets, restrict, targeted_warning
from livepolicy.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    diagnostics_exit,
    fail,
    json_option,
    load_facts,
    load_policies,
    no_color_option,
    plan_doc,
    print_lines,
    resolve_now,
    target_option,
)
from livepolicy.cli.plan_cmds import terminal_view
from livepolicy.cli.progress import RichProgressSink
from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.core.locking import StateLockBackend
from livepolicy.core.yamlsrc import load_fast
from livepolicy.planner.serialize import read_plan
from livepolicy.render.markdown import render_apply_report
from livepolicy.render.text import summary_line


def _confirm(doc: dict[str, Any], simulated: bool) -> bool:
    print_lines(terminal_view(doc, limit=50))
    question = ("\nDo you want to simulate these migrations (sim agents: nothing in the "
                "cluster changes)?" if simulated else
                "\nDo you want to perform these migrations?")
    return click.confirm(question, default=False, err=True)


def _has_changes(doc: dict[str, Any]) -> bool:
    s = doc["summary"]
    return bool(s["migrations"] or s["labels_add"] or s["labels_remove"])


def _no_changes(doc: dict[str, Any], as_json: bool) -> None:
    """`apply` without a plan file when the fresh plan changes nothing: the plan's own
    words ("No changes. ..."), no question asked, exit 0."""
    if as_json:
        sink = JsonLinesSink()
        sink.emit(version_event())
        sink.emit(make_event("change_summary", summary_line(doc), changes=dict.fromkeys(
            ("migrated", "rolled_back", "failed", "skipped", "deferred"), 0), outcomes=[]))
    else:
        print_lines(terminal_view(doc, limit=50))


def _agents_choice(agents: str | None, cluster: str) -> str:
    """What --agents means for this cluster: `kube` by default on a live cluster; a
    snapshot file names no agents, so simulating it must be asked for."""
    if agents:
        return agents
    if cluster == "kube":
        return "kube"
    raise DiagnosticError([Diagnostic("--agents", f"which agents should apply the plan of "
                                      f"{cluster}? Pass `--agents sim` to simulate against the "
                                      "snapshot (it records the simulated moves in it), or "
                                      "`--agents AGENTS.yaml` for real agents", None)])


@click.command()
@click.argument("planfile", required=False, type=click.Path(dir_okay=False))
@click.option("--cluster", "-c", metavar="SOURCE",
              help="Cluster facts: a snapshot file or `kube` (default: the source the plan "
                   "was made from).")
@click.option("--policies", "-p", metavar="DIR",
              help="Policy directory (default: the one the plan was made from, or policies).")
@click.option("--agents", "agents", metavar="kube|sim|AGENTS.yaml",
              help="`kube` (default with --cluster kube): the chart's agent DaemonSet; "
                   "`sim`: simulated agents on loopback (a simulation: every line says so); "
                   "or a file mapping nodes to agent URLs and token files. Required with a "
                   "snapshot file.")
@click.option("--agents-namespace", default=DEFAULT_NAMESPACE, show_default=True,
              help="--agents kube: the namespace of the chart's release.")
@click.option("--agents-selector", metavar="SELECTOR",
              help=f"--agents kube: label selector of the agent pods [default: "
                   f"{DEFAULT_SELECTOR}].")
@click.option("--agents-address", type=click.Choice(ADDRESSES), default="auto",
              show_default=True, help="--agents kube: URL host of each agent: its pod IP "
                   "(with hostNetwork the node's IP), the node name, or whichever the "
                   "chart's certificate names.")
@click.option("--agent-token-file", type=click.Path(dir_okay=False), help="--agents kube: "
              "one bearer token for every agent (default: a token minted per node for the "
              "chart's apply ServiceAccount, or the chart's Secret with "
              "agent.auth.mode=sharedToken).")
@click.option("--agent-ca-file", type=click.Path(dir_okay=False), help="--agents kube: the "
              "CA of the agents' certificate (default: read from the chart's Secret).")
@target_option
@click.option("--yes", "-y", is_flag=True, help="Apply without asking (no saved plan).")
@json_option
@no_color_option
@click.option("--report", type=click.Path(dir_okay=False),
              help="Write a Markdown report fit for a pull-request comment.")
@click.option("--metrics-file", type=click.Path(dir_okay=False), metavar="PATH",
              help="Write the run's metrics as a Prometheus textfile (atomically, at the "
                   "end): docs/events.md.")
@click.option("--state-dir", default=".livepolicy", show_default=True,
              help="Journal, lock and local agent state.")
@click.option("--parallelism", default=10, show_default=True,
              help="At most this many migrations at once (budgets may allow fewer).")
@click.option("--sim-time-scale", default=0.01, show_default=True,
              help="sim agents: real seconds per simulated second.")
@click.option("--lock-backend", type=click.Choice(["local", "kube"]), default="local",
              show_default=True, help="Where the apply lock lives: the state directory, or "
              "a Kubernetes Lease (kube-system/livepolicy-apply).")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=0, show_default=True,
              metavar="SECONDS", help="Wait up to this long for a lock another apply holds "
              "(local or kube backend) before giving up.")
@click.option("--kube-events", is_flag=True, help="Post Kubernetes Events on the pods for "
              "each migration phase (best-effort: never slows or fails the apply).")
@click.option("--kubeconfig", metavar="FILE", help="The cluster's kubeconfig (--cluster "
              "kube, --agents kube, --lock-backend kube, --kube-events).")
@click.option("--context", metavar="NAME", help="kubeconfig context (as --kubeconfig).")
@click.option("--call-timeout", type=float, help="Seconds before an agent call counts as "
              "hung (default: the policy's progressTimeout).")
@click.option("--sim-faults", type=click.Path(dir_okay=False, exists=True), hidden=True,
              help="sim agents: a YAML/JSON list of faults to arm before applying, each "
                   "{node, phase, mode, count?, seconds?, when?, factor?, migration?} "
                   "(tests and demos).")
def apply(planfile: str | None, cluster: str | None, policies: str | None,
          agents: str | None, agents_namespace: str, agents_selector: str | None,
          agents_address: str, agent_token_file: str | None, agent_ca_file: str | None,
          target: tuple[str, ...], yes: bool, as_json: bool, report: str | None,
          metrics_file: str | None,
          state_dir: str, parallelism: int,
          sim_time_scale: float, lock_backend: str, lock_timeout: float, kube_events: bool,
          kubeconfig: str | None, context: str | None, call_timeout: float | None,
          sim_faults: str | None) -> None:
    """Carry out a saved plan (or plan, confirm and apply) through the node agents, on the
    cluster the plan was made from."""
    state = Path(state_dir)
    ctx = click.get_current_context()
    # --cluster kube reads its facts with the same kubeconfig (see cli/sources.py)
    ctx.meta["livepolicy.kubeconfig"] = kubeconfig
    ctx.meta["livepolicy.context"] = context
    with _apply_errors(as_json):
        targets = parse_targets(target)
        if planfile and targets:
            raise DiagnosticError([Diagnostic("--target", "targets are chosen when planning: "
                                              f"make the plan with --target instead of "
                                              f"applying {planfile} with it", None)])
        if planfile:
            doc = read_plan(Path(planfile))
            cluster = cluster or doc["cluster"]["source"]
            policies = policies or doc.get("inputs", {}).get("policies") or "policies"
        if not cluster:
            raise DiagnosticError([Diagnostic("--cluster", "apply needs --cluster or a saved "
                                              "plan", None)])
        lab = cluster == "lab"  # the lab's own agents and record (livepolicy lab)
        ps = load_policies(policies or "policies")
        facts = load_facts(cluster)
        if not planfile:
            doc = plan_doc(facts, ps, resolve_now(None, facts))
            if targets:
                doc = restrict(doc, targets)
            if not _has_changes(doc):  # nothing to confirm, no agents, no lock: done
                _no_changes(doc, as_json)
                sys.exit(EXIT_OK)
        chosen = "lab" if lab else _agents_choice(agents, cluster)
        simulated = chosen == "sim"
        if not planfile and as_json and not yes:
            raise DiagnosticError([Diagnostic("--json", "applying without a saved plan and "
                                              "with --json needs --yes (nothing can be "
                                              "confirmed)", None)])
        if sim_faults and not simulated:
            raise DiagnosticError([Diagnostic("--sim-faults", "needs --agents sim", None)])
        # Checked before confirming and locking: a typo or a missing agent costs nothing.
        listed: AgentTable | None = None
        if chosen == "kube":
            listed = KubeAgents(_kube_client(ctx, kubeconfig, context), namespace=
                                agents_namespace, selector=agents_selector,
                                token_file=agent_token_file, ca_file=agent_ca_file,
                                address=agents_address)
        elif chosen not in ("sim", "lab"):
            listed = StaticAgents(Path(chosen))
        if listed is not None:
            listed.require(plan_nodes(doc))
        if not planfile and not yes and not _confirm(doc, simulated):
            click.echo("Apply cancelled.", err=True)
            sys.exit(EXIT_OK)
    with _apply_errors(as_json):
        lock = _lock(lock_backend, state, kubeconfig, context)
        try:
            acquire_within(lock, lock_timeout, None if as_json else lambda held: click.echo(
                f"Waiting up to {lock_timeout:g} s for the lock: {held}", err=True))
        except LockHeld as exc:
            raise DiagnosticError([Diagnostic(str(state), str(exc), None)]) from None
    writer: Any = None
    with ExitStack() as stack, _apply_errors(as_json):
        stack.callback(lock.release)
        run_dir = state / "runs" / str(doc["fingerprint"])[:16]
        notices: list[dict[str, Any]] = []  # said right after the version event
        journal = _journal(run_dir, lock, lock_backend, str(doc["fingerprint"]), notices)
        stack.callback(journal.close)
        # A resumed run: what this plan's earlier runs changed in the snapshot (pods bound
        # to new nodes, eviction requests, labels) is not a reason to call it stale. Nodes
        # are never changed by apply, so a changed node still is. On a live cluster a
        # moved pod is a copy of another name: its old name is gone.
        records = journal.records()
        touched = {f"Pod/{doc_m['pod']}" for doc_m in doc["migrations"]
                   if doc_m["id"] in records and records[doc_m["id"]].phase != "skipped"}
        moved = {f"Pod/{doc_m['pod']}" for doc_m in doc["migrations"]
                 if doc_m["id"] in records and records[doc_m["id"]].phase == "committed"}
        if any(e.get("kind") == "labels" for e in journal.events()):
            touched |= {f"Pod/{lc['pod']}" for lc in doc["labels"]}
        if planfile:
            reasons = stale_reasons(doc, facts, ps, ignore=touched,
                                    gone=moved if cluster == "kube" and not simulated
                                    else None)
            if reasons:
                raise DiagnosticError([Diagnostic(
                    planfile, "Saved plan is stale: " + "; ".join(reasons[:20])
                    + (f"; and {len(reasons) - 20} more" if len(reasons) > 20 else "")
                    + ". Run `livepolicy plan` again.", None)])
        warning = targeted_warning(doc)
        if warning:
            notices.append(make_event("targeted", warning, "warn", targets=doc["targets"]))
        if lab:
            from livepolicy.cli.lab_cmds import LabAgentPool

            pool: Any = LabAgentPool()
        elif simulated:
            pool = LocalSimAgents(state, facts, time_scale=sim_time_scale)
            stack.callback(pool.stop)
            try:
                pool.start()
                # A new plan starts from the snapshot: pods an earlier simulation in this
                # state directory moved are put back where the snapshot says (else every
                # migration would roll back: "pod not on this node"). A resumed run keeps
                # the agents as they are: the journal relies on them.
                stray = pool.disagreements(facts) if not records else []
                if stray:
                    pool.reseed(facts)
                    notices.append(make_event(
                        "sim_reseeded", f"sim agents reseeded from {cluster}: {len(stray)} "
                        f"pod(s) ran where an earlier simulation in {state} left them, not "
                        "where the snapshot says (" + "; ".join(stray[:5])
                        + (f"; and {len(stray) - 5} more" if len(stray) > 5 else "") + ")",
                        "warn", pods=stray))
                else:
                    pool.seed(facts)
            except (RuntimeError, OSError, AgentClientError) as exc:
                raise DiagnosticError([Diagnostic(str(state), "cannot start the sim agents: "
                                                  f"{exc}", None)]) from None
        else:
            pool = listed
        collected = ListSink()
        if as_json:
            sink: Any = TeeSink(JsonLinesSink(), collected)
        else:
            progress = RichProgressSink(len(doc["migrations"]),
                                        prefix=SIMULATED if simulated else "")
            stack.enter_context(progress)
            sink = TeeSink(progress, collected)
        if kube_events:
            sink = TeeSink(sink, _kube_event_sink(stack, doc, kubeconfig, context))
        if metrics_file:
            sink = TeeSink(sink, MetricsSink(Path(metrics_file)))
        if simulated:
            sink = SimulatedSink(sink)
        if notices:
            sink = _AfterVersion(sink, notices)
        writer = _writer(cluster, simulated, lab, ctx, kubeconfig, context, sink)
        engine = Engine(doc, pool, journal, _Announced(writer, cluster, simulated, sink),
                        sink, EngineOptions(
            parallelism=parallelism, call_timeout_s=call_timeout))
        if sim_faults:
            arm_faults(pool, engine, Path(sim_faults))
        result = engine.run()
    if report:
        write_report(Path(report), doc, cluster, result, simulated=simulated)
    failures = int(getattr(writer, "failures", 0))
    sys.exit(EXIT_OK if result.ok and not failures else EXIT_ERROR)


def _journal(run_dir: Path, lock: Any, backend: str, fingerprint: str,
             notices: list[dict[str, Any]]) -> Journal:
    """The run's journal; with the kube lock backend also kept in the cluster (see
    apply/kube_journal.py), and taken from there when it is ahead of the local one."""
    path = run_dir / "journal.jsonl"
    if backend != "kube":
        return Journal(path)
    from livepolicy.apply.kube_journal import KubeJournalStore
    from livepolicy.kube.errors import KubeError

    store = KubeJournalStore(lock.client, fingerprint, lock.namespace)
    try:
        seed = store.load()
    except KubeError as exc:
        raise DiagnosticError([Diagnostic("--lock-backend kube", f"cannot read the "
                                          f"journal in {store.where}: {exc}", None)]) from None
    journal = Journal(path, mirror=store.save, seed=seed)
    if journal.seeded:
        notices.append(make_event("journal_from_cluster", f"resuming from the journal in "
                                  f"{store.where}: it is ahead of {path}",
                                  "warn", configmap=store.where))
    return journal


def _kube_client(ctx: click.Context, kubeconfig: str | None, context: str | None) -> Any:
    """One client of the cluster for the whole command (agents, writer), closed at exit."""
    client = ctx.meta.get("livepolicy.apply.client")
    if client is None:
        from livepolicy.kube.client import KubeClient
        from livepolicy.kube.errors import KubeError

        try:
            client = KubeClient.from_config(kubeconfig, context)
        except KubeError as exc:
            raise DiagnosticError([Diagnostic("kube", str(exc), None)]) from None
        ctx.call_on_close(client.close)
        ctx.meta["livepolicy.apply.client"] = client
    return client


def _writer(cluster: str, simulated: bool, lab: bool, ctx: click.Context,
            kubeconfig: str | None, context: str | None, sink: Any) -> Any:
    """Where the outcome is recorded: the simulation's own snapshot (sim only), the lab,
    the live cluster (labels, evictions; the kubelet agents moved the pods), or nowhere
    (sim against a live cluster; real agents on a plan made from a snapshot file)."""
    if lab:
        from livepolicy.lab.source import LabWriter

        return LabWriter()
    if cluster == "kube":
        if simulated:
            return NoWriter()
        from livepolicy.apply.kube_cluster import KubeWriter

        return KubeWriter(_kube_client(ctx, kubeconfig, context), sink)
    return SnapshotWriter(Path(cluster)) if simulated else NoWriter()


class _AfterVersion:
    """Passes events on, and the `pending` ones right after the first one (the version event, which
    stays first in the stream)."""

    def __init__(self, inner: Any, pending: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.pending = pending

    def emit(self, event: dict[str, Any]) -> None:
        self.inner.emit(event)
        pending, self.pending = self.pending, []
        for e in pending:
            self.inner.emit(e)


class _Announced:
    """The writer, saying after its flush what became of the record (one event before
    the summary: a line, or a JSON event)."""

    def __init__(self, writer: Any, cluster: str, simulated: bool, sink: Any) -> None:
        self.writer, self.cluster, self.simulated, self.sink = writer, cluster, simulated, sink
        self.move_pod = writer.move_pod
        self.set_label = writer.set_label
        self.request_eviction = writer.request_eviction

    def flush(self) -> None:
        self.writer.flush()
        w, cluster = self.writer, self.cluster
        if isinstance(w, SnapshotWriter):
            msg = (f"snapshot {cluster} updated with the simulated moves" if w.written
                   else f"snapshot {cluster} unchanged")
        elif cluster == "kube" and self.simulated:
            msg = "nothing written to the cluster"
        elif isinstance(w, NoWriter):
            msg = (f"snapshot {cluster} not updated: the agents moved the real pods; take "
                   "a new snapshot to plan again")
        else:
            return
        self.sink.emit(make_event("cluster_write", msg, "info" if self.simulated else "warn",
                                  written=isinstance(w, SnapshotWriter) and w.written))


@contextmanager
def _apply_errors(as_json: bool) -> Iterator[None]:
    """Diagnostics exit 1 with located messages on stderr; with --json, stdout keeps to one
    JSON event per line (a Terraform-style `diagnostic` event for each)."""
    try:
        try:
            yield
        except JournalMirrorError as exc:  # stopped as by a crash: resumable
            raise DiagnosticError([Diagnostic("--lock-backend kube", f"{exc}; the apply "
                                              "stopped; run it again to resume", None)]
                                  ) from None
    except DiagnosticError as exc:
        if as_json:
            out = JsonLinesSink()
            for d in exc.diagnostics:
                out.emit(make_event("diagnostic", d.message, "error",
                                    diagnostic=d.to_json()))
        fail(exc.diagnostics)


def write_report(path: Path, doc: dict[str, Any], cluster: str, result: ApplyResult, *,
                 simulated: bool = False) -> None:
    """The Markdown apply report (`--report`): counts, then where every pod is now."""
    path.write_text(render_apply_report({
        "summary": (SIMULATED if simulated else "") + result.summary_line(),
        "fingerprint": doc["fingerprint"],
        "cluster": cluster, "counts": {r: result.count(r) for r in (
            "migrated", "rolled_back", "failed", "skipped", "deferred")},
        "outcomes": [o.to_json() for o in result.outcomes.values()]}), encoding="utf-8")


def arm_faults(pool: LocalSimAgents, engine: Engine, path: Path) -> None:
    """Arm the faults listed in `path` on the sim agents (`migration` names a planned
    migration; its first attempt is targeted)."""
    data = load_fast(path)
    if not isinstance(data, list) or not all(isinstance(f, dict) for f in data):
        raise DiagnosticError([Diagnostic(str(path), "faults file must be a list of "
                                          "{node, phase, mode, ...}", None)])
    for f in data:
        node = str(f.get("node", ""))
        if node not in pool.agents:
            raise DiagnosticError([Diagnostic(str(path), f"no sim agent for node {node!r}",
                                              None)])
        migration = f.get("migration")
        try:
            pool.client(node).set_fault(
                str(f.get("phase")), str(f.get("mode")), int(f.get("count", 1)),
                f.get("seconds"), when=str(f.get("when", "before")), factor=f.get("factor"),
                mid=engine.agent_mid(str(migration)) if migration else None)
        except AgentClientError as exc:
            raise DiagnosticError([Diagnostic(str(path), f"fault {f}: {exc}", None)]) from exc


def _kube_event_sink(stack: ExitStack, doc: dict[str, Any], kubeconfig: str | None,
                     context: str | None) -> Any:
    from livepolicy.apply.kube_events import sink_for_plan
    from livepolicy.kube.client import KubeClient
    from livepolicy.kube.errors import KubeError
    from livepolicy.kube.events import EventRecorder

    try:
        client = KubeClient.from_config(kubeconfig, context)
    except KubeError as exc:
        raise DiagnosticError([Diagnostic("--kube-events", str(exc), None)]) from None
    stack.callback(client.close)
    sink = sink_for_plan(EventRecorder(client), doc)
    stack.callback(sink.close)
    return sink


def _lock(backend: str, state: Path, kubeconfig: str | None,
          context: str | None) -> StateLockBackend:
    if backend == "kube":
        from livepolicy.kube.client import KubeClient
        from livepolicy.kube.lease import LeaseLock

        return LeaseLock(KubeClient.from_config(kubeconfig, context))
    return StateLock(state)


@click.command(name="force-unlock")
@no_color_option
@click.argument("lock_id")
@click.option("--state-dir", default=".livepolicy", show_default=True)
@click.option("--lock-backend", type=click.Choice(["local", "kube"]), default="local",
              show_default=True)
@click.option("--kubeconfig", metavar="FILE")
@click.option("--context", metavar="NAME")
def force_unlock_cmd(lock_id: str, state_dir: str, lock_backend: str, kubeconfig: str | None,
                     context: str | None) -> None:
    """Remove a stale state lock left by an apply that is gone."""
    try:
        if lock_backend == "kube":
            from livepolicy.kube.client import KubeClient
            from livepolicy.kube.lease import force_unlock as lease_force_unlock

            with diagnostics_exit():
                click.echo(lease_force_unlock(KubeClient.from_config(kubeconfig, context),
                                              lock_id))
            return
        click.echo(force_unlock(Path(state_dir), lock_id))
    except ValueError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent(args: tuple[str, ...]) -> None:
    """Run the node agent (see `livepolicy agent --help`)."""
    from livepolicy.agent.main import run_agent
    sys.exit(run_agent(list(args)))
