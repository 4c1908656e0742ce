"""The controller: caches, policies, leader election and label writes, wired together.

What is watched, and why everything: the facts read twelve kinds (nodes, pods, PVCs,
PVs, PDBs, the five workload kinds, Jobs/CronJobs, ENIConfigs), and any of them can
change a verdict (a PDB that stops allowing disruptions, a PV whose zone differs, a
Deployment scaled to one replica). Watching all of them costs the API server one cheap
watch-cache stream each and gives exact, immediate reassessment; relisting some on a
timer would leave their changes unseen for up to the resync period. Every kind is also
relisted every `--resync` seconds as a safety net, and an assessment then runs anyway,
which is what picks up time-based verdicts (maintenance windows, node ages). The server
version and the optional `kube-system/livepolicy-cluster-info` ConfigMap change rarely:
they are read at start and on each resync.

The loop (one thread, `run`): wait for a change, let the burst settle (`Debouncer`),
then, if this replica leads, build the facts from the caches (`KubeSource.facts_of`, as a
live read does), plan the labels and write the changes (`reconcile.write_labels`, as
`livepolicy label` does). Every write checks leadership first; each answer goes back
into the pod cache so the next assessment sees it before the watch echoes it. Failed
writes are retried with a backoff. The policies are checked on every turn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livepolicy.controller.cache import Store
from livepolicy.controller.debounce import Debouncer
from livepolicy.controller.elector import Elector
from livepolicy.controller.logs import EventLog
from livepolicy.controller.metrics import Check, HealthServer, Metrics
from livepolicy.controller.policies import ConfigMapPolicies, DirPolicies
from livepolicy.controller.reconcile import summarise, write_labels
from livepolicy.controller.reflector import Backoff, Reflector
from livepolicy.core.diagnostics import DiagnosticError
from livepolicy.facts.kube import (
    INFO_CONFIGMAP_NAME,
    INFO_CONFIGMAP_NAMESPACE,
    KubeSource,
    cluster_info,
)
from livepolicy.kube.client import KubeClient, normalise
from livepolicy.kube.errors import KubeError
from livepolicy.kube.labels import LabelEdit, LabelOutcome, LabelWriter, Replan
from livepolicy.kube.lease import LeaseLock
from livepolicy.kube.resources import (
    CONFIGMAPS,
    OPTIONAL_RESOURCES,
    PODS,
    SNAPSHOT_RESOURCES,
)

DONE = ("applied", "would-apply")


@dataclass
class Options:
    policies_dir: str = ""
    policies_configmap: str = ""  # NAMESPACE/NAME
    namespace: str = "livepolicy-system"  # of the Lease
    lease_name: str = "livepolicy-controller"
    lease_duration: float = 15.0
    identity: str = ""
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    resync: float = 300.0
    dry_run: bool = False
    quiet: float = 0.5  # debounce: settle time of a burst
    max_delay: float = 5.0  # debounce: at most this long after a burst starts
    stuck_after: float = 300.0  # /healthz fails when the loop has not turned for this long
    watch_timeout: tuple[int, int] = (240, 480)


class LeaderWriter(LabelWriter):
    """`LabelWriter` that writes only while this replica leads, feeds its answers back
    into the pod cache, and (dry run) does not repeat a would-apply it already checked."""

    def __init__(self, client: KubeClient, elector: Elector, pods: Store, *,
                 dry_run: bool, stopping: threading.Event) -> None:
        super().__init__(client, dry_run=dry_run)
        self.elector = elector
        self.stopping = stopping
        self.pods = pods
        self._checked: set[tuple[str, str, str | None, str]] = set()

    def patch(self, edit: LabelEdit, version: str) -> dict[str, Any]:
        if not self.elector.leader:
            raise KubeError("not written: this replica is no longer the leader")
        if self.stopping.is_set():
            raise KubeError("not written: the controller is stopping")
        if not self.dry_run:
            self.pods.expect(edit.pod, edit.key, edit.value)
        out = super().patch(edit, version)
        if out and not self.dry_run:
            normalise(out, PODS)
            self.pods.put(out)
        return out

    def run(self, edits: list[LabelEdit], versions: Mapping[str, str], replan: Replan
            ) -> list[LabelOutcome]:
        if not self.dry_run:
            return super().run(edits, versions, replan)
        seen = self._checked
        fresh = [e for e in edits
                 if (e.pod, e.key, e.value, versions.get(e.pod, "")) not in seen]
        outcomes = super().run(fresh, versions, replan)
        for o in outcomes:
            if o.result == "would-apply":
                seen.add((o.edit.pod, o.edit.key, o.edit.value, versions.get(o.edit.pod, "")))
        return outcomes


class Controller:
    def __init__(self, client: KubeClient, options: Options, log: EventLog | None = None
                 ) -> None:
        self.client = client
        self.options = o = options
        self.log = log or EventLog()
        self.metrics = Metrics()
        self.source = KubeSource(client=client)
        self.stores = {res.kind: Store(res.kind) for res in SNAPSHOT_RESOURCES}
        self.reflectors = [self._reflector(res, self.stores[res.kind],
                                           optional=res in OPTIONAL_RESOURCES)
                           for res in SNAPSHOT_RESOURCES]
        self.policies: DirPolicies | ConfigMapPolicies
        if o.policies_configmap:
            ns, _, name = o.policies_configmap.partition("/")
            store = Store("ConfigMap")
            self.reflectors.append(self._reflector(
                CONFIGMAPS, store, namespace=ns, field_selector=f"metadata.name={name}"))
            self.policies = ConfigMapPolicies(ns, name, store)
        else:
            self.policies = DirPolicies(Path(o.policies_dir))
        self.lock = LeaseLock(client, o.lease_name, o.namespace, operation="controller",
                              duration=o.lease_duration, identity=o.identity,
                              renew_every=max(0.5, o.lease_duration / 7.5),
                              renew_deadline=o.lease_duration * 2 / 3)
        self.elector = Elector(self.lock, retry=max(0.5, o.lease_duration / 7.5),
                               on_change=self._on_leader, on_error=self._lease_error)
        self.stop_event = threading.Event()
        self.writer = LeaderWriter(client, self.elector, self.stores["Pod"],
                                   dry_run=o.dry_run, stopping=self.stop_event)
        self.server = HealthServer(o.metrics_host, o.metrics_port, self.metrics,
                                   self.healthz, self.readyz)
        self.debounce = Debouncer(o.quiet, o.max_delay)
        self.retry = Backoff(first=2.0, cap=60.0)
        self.assessments = 0
        self.last_outcomes: list[LabelOutcome] = []
        self.heartbeat = time.monotonic()
        self._cond = threading.Condition()
        self._info_parts: tuple[dict[str, Any], dict[str, Any] | None] | None = None
        self._next_resync = 0.0

    def _reflector(self, res: Any, store: Store, **kw: Any) -> Reflector:
        return Reflector(self.client, res, store, resync=self.options.resync,
                         watch_timeout=self.options.watch_timeout, on_change=self._changed,
                         on_restart=self._restarted, on_list=self._listed,
                         on_error=self._watch_error, **kw)

    # -- events from other threads ---------------------------------------------------------
    def _changed(self, kind: str, reason: str) -> None:
        with self._cond:
            self.debounce.poke(time.monotonic(), kind)
            self._cond.notify_all()

    def _restarted(self, kind: str, reason: str) -> None:
        self.metrics.watch_restarts.labels(kind, reason).inc()
        if reason != "timeout":
            self.log("watch-restart", "warning" if reason == "error" else "info", kind=kind,
                     reason=reason)

    def _listed(self, kind: str, reason: str) -> None:
        self.metrics.relists.labels(kind, reason).inc()
        if reason != "initial":
            self.log("relist", kind=kind, reason=reason)

    def _watch_error(self, kind: str, message: str) -> None:
        self.log("watch-error", "warning", kind=kind, message=message)

    def _lease_error(self, message: str) -> None:
        self.log("lease-error", "warning", lease=f"{self.lock.namespace}/{self.lock.name}",
                 message=message)

    def _on_leader(self, leader: bool, why: str) -> None:
        self.metrics.is_leader.set(1 if leader else 0)
        self.log("leader" if leader else "standby", identity=self.lock.id,
                 lease=f"{self.lock.namespace}/{self.lock.name}", reason=why)
        if leader:
            with self._cond:
                self.debounce.poke(time.monotonic(), "leader")
                self._cond.notify_all()

    # -- health ----------------------------------------------------------------------------
    def unsynced(self) -> list[str]:
        """Kinds whose first list has not completed yet."""
        return [r.kind for r in self.reflectors if not r.store.synced]

    def healthz(self) -> list[Check]:
        age = time.monotonic() - self.heartbeat
        dead = [r.kind for r in self.reflectors if not r.alive()]
        return [("loop", age < self.options.stuck_after, f"last turn {age:.1f}s ago"),
                ("watches", not dead, f"stopped: {', '.join(dead)}" if dead else "running"),
                ("elector", self.elector.alive(), "leader" if self.elector.leader else
                 "standby")]

    def readyz(self) -> list[Check]:
        waiting = self.unsynced()
        st = self.policies.state
        if st.current is None:
            pol = (False, f"none loaded: {len(st.problems)} problem(s)"
                   + (f"; first: {st.problems[0].format()}" if st.problems else ""))
        elif st.problems:
            pol = (True, f"invalid since the last change ({len(st.problems)} problem(s); "
                         f"first: {st.problems[0].format()}); using the last good set")
        else:
            pol = (True, f"{len(st.current.policies)} policies, "
                         f"{len(st.current.templates)} templates")
        return [("caches", not waiting, f"waiting for {', '.join(waiting)}" if waiting
                 else "synced"), ("policies", *pol)]

    # -- the loop --------------------------------------------------------------------------
    def start(self) -> None:
        """Serve health, start the watches and the election (`run` then loops)."""
        self.server.start()
        host, port = self.server.address
        self.log("start", identity=self.lock.id, metrics=f"{host}:{port}",
                 lease=f"{self.lock.namespace}/{self.lock.name}", dry_run=self.options.dry_run,
                 policies=self.policies.state.where)
        for r in self.reflectors:
            r.start()
        self.elector.start()

    def run(self) -> None:
        """Loop until `stop_event` is set, then shut down (the Lease is released)."""
        try:
            while not self.stop_event.is_set():
                try:
                    self.turn()
                except Exception as exc:  # a bug must not stop the labels for good
                    self.log("loop-error", "error", message=f"{type(exc).__name__}: {exc}")
                    self.stop_event.wait(1.0)
        finally:
            self.shutdown()

    def turn(self) -> None:
        now = time.monotonic()
        self.heartbeat = now
        self._check_policies(now)
        if now >= self._next_resync:
            self._next_resync = now + self.options.resync
            self._info_parts = None  # re-read the version and the info ConfigMap
            with self._cond:
                self.debounce.poke(now, "resync")
        with self._cond:
            reasons = None
            if not self.unsynced() and self.elector.leader and \
                    self.policies.state.current is not None:
                reasons = self.debounce.take(now)
            due = self.debounce.due_at()
            timeout = 1.0 if due is None else min(1.0, max(0.0, due - now))
            if reasons is None:
                self._cond.wait(timeout)
        if reasons is not None:
            self.assess(reasons)

    def _check_policies(self, now: float) -> None:
        try:
            changed = self.policies.check(now)
        except OSError as exc:  # an unreadable directory: keep the last good set
            self.log("policies-error", "error", message=str(exc))
            return
        st = self.policies.state
        if changed is True:
            self.metrics.policies_valid.set(1)
            self.log("policies-loaded", source=st.where, policies=len(st.current.policies)
                     if st.current else 0)
            with self._cond:
                self.debounce.poke(now, "policies")
        elif changed is False:
            self.metrics.policies_valid.set(0)
            self.metrics.policy_errors.inc()
            self.log("policies-invalid", "error", source=st.where, problems=len(st.problems),
                     kept="last good set" if st.current else "none: not assessing")
            for d in st.problems[:50]:
                self.log("policy-problem", "error", diagnostic=d.format())

    def _cluster_info(self, nodes: list[dict[str, Any]]) -> dict[str, Any]:
        if self._info_parts is None:
            # Failing here fails the assessment (retried): facts without the override
            # ConfigMap (networking, subnets) could change verdicts, as a live read would.
            self._info_parts = (self.client.version(), self.client.get_optional(
                CONFIGMAPS, INFO_CONFIGMAP_NAME, INFO_CONFIGMAP_NAMESPACE))
        version, configmap = self._info_parts
        observed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cluster_info(version, nodes, configmap, self.client.target.cluster, observed)

    def items(self) -> list[dict[str, Any]]:
        """The cached cluster as a live read returns it: ClusterInfo first."""
        per_kind = {res.kind: self.stores[res.kind].items() for res in SNAPSHOT_RESOURCES}
        for kind, objs in per_kind.items():
            self.metrics.cache_objects.labels(kind).set(len(objs))
        out = [self._cluster_info(per_kind["Node"])]
        for res in SNAPSHOT_RESOURCES:
            out.extend(per_kind[res.kind])
        return out

    def assess(self, reasons: set[str]) -> list[LabelOutcome] | None:
        ps = self.policies.state.current
        if ps is None:
            return None
        t0 = time.perf_counter()
        self.assessments += 1
        try:
            items = self.items()
            facts = self.source.facts_of(items)
            outcomes = write_labels(self.writer, self.source, items, facts, ps)
        except (DiagnosticError, KubeError) as exc:
            msg = str(exc)
            self.metrics.reconciles.labels("error").inc()
            self.log("assessment-error", "error", message=msg)
            self._retry_later()
            return None
        seconds = time.perf_counter() - t0
        self.metrics.duration.observe(seconds)
        self.last_outcomes = outcomes
        key = ps.settings.labels.migration_enabled
        eligible = {p.key for p in facts.pods if p.labels.get(key) == "true"}
        for out in outcomes:
            self.metrics.label_writes.labels(out.edit.action, out.result).inc()
            if out.conflicts:
                self.metrics.conflicts.inc(out.conflicts)
            if out.result in DONE:
                (eligible.add if out.edit.action == "add" else eligible.discard)(out.edit.pod)
            self.log("label", "error" if out.result == "failed" else "info", pod=out.edit.pod,
                     action=out.edit.action, result=out.result, conflicts=out.conflicts or None,
                     message=out.message or None)
        self.metrics.eligible.set(len(eligible))
        self.metrics.pods.set(len(facts.pods))
        s = summarise(outcomes)
        if s["failed"]:
            self.metrics.reconciles.labels("error").inc()
            self._retry_later()
        else:
            self.metrics.reconciles.labels("ok").inc()
            self.metrics.last_success.set(time.time())
            self.retry.reset()
        self.log("assessed", reasons=",".join(sorted(reasons)), pods=len(facts.pods),
                 eligible=len(eligible), added=s["add"], removed=s["remove"],
                 failed=s["failed"], seconds=round(seconds, 3))
        return outcomes

    def _retry_later(self) -> None:
        with self._cond:
            self.debounce.poke_at(time.monotonic() + self.retry.next(), "retry")

    def stop(self) -> None:
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()

    def shutdown(self) -> None:
        """Stop the watches, release the Lease, stop serving; each step runs even if an
        earlier one failed, and nothing escapes (a clean exit on SIGTERM)."""
        steps = [*(lambda r=r: r.stop(timeout=0) for r in self.reflectors),
                 lambda: self.elector.stop(release=True),
                 *(lambda r=r: r.stop() for r in self.reflectors), self.server.stop]
        for step in steps:
            try:
                step()
            except Exception as exc:
                self.log("shutdown-error", "error", message=f"{type(exc).__name__}: {exc}")
        self.log("stopped", identity=self.lock.id)
