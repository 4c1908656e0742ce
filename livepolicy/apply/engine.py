"""The apply engine: walk the plan's DAG and move each pod through its agents.

One migration = prepare -> checkpoint (pre-copy rounds, then a final freeze) -> transfer
-> restore -> verify -> COMMIT POINT -> commit on both agents. Post-copy (a policy's
`memoryTransfer: post-copy`, where both agents offer it) moves the commit point before
the restore: prepare -> lazy checkpoint -> transfer (state only) -> COMMIT POINT -> lazy
restore (memory follows on demand) -> verify -> commit. Every phase is journaled
before it starts. Before the commit point any failure rolls back (destination first, so
two copies never run); after it, the destination owns the pod and the engine only ever
rolls forward. A re-run reads the journal and settles every in-flight migration the
same way, then continues with what is left.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from livepolicy.agent.client import AgentClient, AgentClientError, AgentError, AgentUnreachable
from livepolicy.agent.crypto import new_key
from livepolicy.apply.cluster import ClusterWriter, RecordMismatch
from livepolicy.apply.events import EventSink, make_event, version_event
from livepolicy.apply.journal import Journal, MigrationRecord, past_commit_point
from livepolicy.core.quantity import parse_bandwidth, parse_duration_ms
from livepolicy.planner.windows import window_open

TRANSIENT_STATUS = (500, 502, 503, 504)  # an idempotent call answered so may be retried
PHASE_ORDER = ("pending", "preparing", "checkpointing", "transferring", "restoring",
               "verifying", "committing", "committed")


@dataclass(frozen=True)
class AgentEndpoint:
    node: str
    url: str
    token: str
    # https agents behind a private CA or with mutual TLS (see apply/agents_file.py)
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    # the agent's own certificate (PEM) when it is the one trusted (agent/tls_identity.py):
    # a source gets the destination's, to trust that node's agent alone on transfer
    certificate: str | None = field(default=None, compare=False, repr=False)


class AgentPool(Protocol):
    """Where each node's agent answers (a local launcher, or a DaemonSet's pod IPs)."""

    def endpoint(self, node: str) -> AgentEndpoint: ...


@dataclass
class EngineOptions:
    parallelism: int = 10
    call_timeout_s: float | None = None  # default: the policy's progressTimeout
    recovery_timeout_s: float = 60.0  # how long to keep retrying rollback/commit calls
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class MigrationFailed(Exception):
    pass


class _LazyReady(Exception):
    """Internal: a post-copy migration reached its commit point (leave the rollback scope)."""


@dataclass
class Outcome:
    mid: str
    pod: str
    source: str
    destination: str
    result: str  # migrated | rolled_back | failed | skipped | deferred
    location: str  # destination | source | unknown
    phase: str = ""
    error: str = ""
    freeze_ms: int = 0
    duration_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.mid, "pod": self.pod, "from": self.source, "to": self.destination,
                "result": self.result, "location": self.location, "phase": self.phase,
                "error": self.error, "freeze_ms": self.freeze_ms,
                "duration_ms": self.duration_ms}


@dataclass
class ApplyResult:
    outcomes: dict[str, Outcome]
    labels_applied: int
    aborted: bool = False

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes.values() if o.result == result)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0 and self.count("rolled_back") == 0 and \
            self.count("skipped") == 0 and not self.aborted

    def summary_line(self) -> str:
        extra = "".join(f", {self.count(r)} {r.replace('_', ' ')}" for r in ("skipped",
                        "deferred") if self.count(r))
        head = "Apply complete!" if self.ok else "Apply finished with problems."
        return (f"{head} {self.count('migrated')} migrated, {self.count('rolled_back')} "
                f"rolled back, {self.count('failed')} failed{extra}; {self.labels_applied} "
                "label change(s).")


class Engine:
    def __init__(self, plan: dict[str, Any], pool: AgentPool, journal: Journal,
                 writer: ClusterWriter, sink: EventSink, options: EngineOptions | None = None
                 ) -> None:
        self.plan = plan
        self.pool = pool
        self.journal = journal
        self.writer = writer
        self.sink = sink
        self.opts = options or EngineOptions()
        self.migrations = {m["id"]: m for m in plan["migrations"]}
        self.policies = {p["name"]: p for p in plan["policies"]}
        self.run_id = str(plan["fingerprint"])[:10]
        self.outcomes: dict[str, Outcome] = {}
        self.abort = threading.Event()
        self._writer_lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------
    def agent_mid(self, mid: str, attempt: int = 0) -> str:
        """The migration id the agents know an attempt of plan migration `mid` by."""
        return f"lp-{self.run_id}-{mid}-a{attempt}"

    def _client(self, node: str, timeout: float) -> tuple[AgentClient, AgentEndpoint]:
        ep = self.pool.endpoint(node)
        return AgentClient(ep.url, ep.token, timeout=timeout, ssl_context=ep.ssl_context), ep

    def _timeout(self, m: dict[str, Any]) -> float:
        if self.opts.call_timeout_s is not None:
            return self.opts.call_timeout_s
        return parse_duration_ms(m["strategy"].get("progress_timeout", "150s")) / 1000

    def _event(self, type_: str, m: dict[str, Any], message: str, level: str = "info",
               **data: Any) -> None:
        self.sink.emit(make_event(type_, message, level, migration={
            "id": m["id"], "pod": m["pod"], "from": m["from"], "to": m["to"]}, **data))

    def _outcome(self, m: dict[str, Any], result: str, location: str, **kw: Any) -> Outcome:
        o = Outcome(m["id"], m["pod"], m["from"], m["to"], result, location, **kw)
        self.outcomes[m["id"]] = o
        return o

    def _retry(self, what: str, fn: Callable[[], Any]) -> Any:
        """Retry an idempotent call (commit, rollback) within the recovery time while the
        agent is unreachable or answers with a transient server error (500, 502-504): past
        the commit point the only way is forward, and a rollback must not give up early."""
        deadline = time.monotonic() + self.opts.recovery_timeout_s
        delay = 0.1
        while True:
            try:
                return fn()
            except AgentUnreachable:
                if time.monotonic() > deadline:
                    raise
            except AgentError as err:
                if err.status not in TRANSIENT_STATUS or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _record_move(self, m: dict[str, Any]) -> Outcome | None:
        """Record a committed move; a cluster that disagrees (RecordMismatch) makes the
        migration failed, its journal left at `committing` so that a re-run checks again."""
        try:
            with self._writer_lock:
                self.writer.move_pod(m["pod"], m.get("uid", ""), m["to"])
        except RecordMismatch as exc:
            self._event("apply_errored", m, f"{m['pod']}: committed by the agents, but {exc}; "
                        "re-run apply to check again", level="error", phase="committing",
                        outcome="failed", error=str(exc))
            return self._outcome(m, "failed", "unknown", phase="committing", error=str(exc))
        return None

    # -- one migration -----------------------------------------------------------------------
    def _migrate(self, m: dict[str, Any], attempt: int) -> Outcome:
        mid, amid = m["id"], self.agent_mid(m["id"], attempt)
        timeout = self._timeout(m)
        deadline = time.monotonic() + m["estimate"]["timeout_ms"] / 1000
        src, src_ep = self._client(m["from"], timeout)
        dst, dst_ep = self._client(m["to"], timeout)
        ns_name = m["pod"]
        started = time.monotonic()
        reached = "pending"
        self._event("apply_start", m, f"{ns_name}: migrating {m['from']} -> {m['to']}",
                    attempt=attempt)

        def phase(name: str, **detail: Any) -> None:
            nonlocal reached
            # The completion timeout rolls back a migration that is still on its way; once
            # verified, committing is the quickest way to end the pod's freeze (and this
            # runs outside the rollback handler: raising here would kill the whole run).
            if time.monotonic() > deadline and name != "committing":
                raise MigrationFailed(f"completion timeout "
                                      f"({m['estimate']['timeout_ms'] / 1000:.0f}s) exceeded")
            if self.abort.is_set() and name in ("preparing", "checkpointing"):
                raise MigrationFailed("apply aborted by another migration's failure")
            self.journal.phase(mid, name, attempt, **detail)
            reached = name
            self._event("apply_progress", m, f"{ns_name}: {name}", phase=name, **detail)

        freeze_start = 0.0
        post_copy = False
        try:
            phase("preparing")
            mem = int(m["estimate"]["memory_bytes"])
            key = new_key()
            # The source uploads the image with a token good for this migration's upload
            # alone; it never sees the destination's own credential (agent/auth.py).
            upload = secrets.token_urlsafe(32)
            post_copy = self._post_copy(m, src, dst)
            transfer = "post-copy" if post_copy else None
            src.prepare(amid, role="source", pod=ns_name, uid=m.get("uid", ""),
                        memory_bytes=mem, key=key, peer=dst_ep.url, memory_transfer=transfer)
            dst.prepare(amid, role="destination", pod=ns_name, uid=m.get("uid", ""),
                        memory_bytes=mem, key=key, peer=src_ep.url, memory_transfer=transfer,
                        upload_token_sha256=hashlib.sha256(upload.encode()).hexdigest())
            phase("checkpointing")
            rounds = 0 if post_copy else self._precopy(m, src, amid)
            freeze_start = time.monotonic()
            final = src.checkpoint(amid, round=rounds, final=True)
            phase("transferring", bytes=int(final.get("image_bytes", 0)), rounds=rounds + 1)
            src.transfer(amid, destination=dst_ep.url, token=upload,
                         destination_certificate=dst_ep.certificate)
            if post_copy:
                raise _LazyReady
            phase("restoring")
            dst.restore(amid)
            phase("verifying")
            v = dst.verify(amid)
            if not v.get("ok") or (final.get("state_sha256") and
                                   v.get("state_sha256") != final.get("state_sha256")):
                raise MigrationFailed(f"verification failed: {v.get('reason') or 'state differs'}")
            freeze_ms = int((time.monotonic() - freeze_start) * 1000)
        except _LazyReady:
            # ---- post-copy's commit point, journaled before the lazy restore starts ----
            phase("committing", post_copy=True)
            def reprepare() -> None:  # a restarted destination lost the key from memory
                dst.prepare(amid, role="destination", pod=ns_name, uid=m.get("uid", ""),
                            memory_bytes=mem, key=key, peer=src_ep.url,
                            memory_transfer="post-copy")

            return self._finish_commit(m, attempt, started, 0, post_copy=True,
                                       freeze_start=freeze_start, reprepare=reprepare)
        except (AgentClientError, MigrationFailed) as exc:
            return self._roll_back(m, attempt, reached, exc, started)
        # ---- the commit point: from here on the destination owns the pod ----
        phase("committing", freeze_ms=freeze_ms)
        return self._finish_commit(m, attempt, started, freeze_ms)

    def _post_copy(self, m: dict[str, Any], src: AgentClient, dst: AgentClient) -> bool:
        """Post-copy only when the policy opted in and both agents offer it."""
        if m["strategy"]["memory_transfer"] != "post-copy":
            return False
        lacking = [node for node, agent in ((m["from"], src), (m["to"], dst))
                   if not agent.capabilities().get("features", {}).get("post_copy")]
        if lacking:
            self._event("apply_progress", m, f"{m['pod']}: post-copy unavailable on "
                        f"{', '.join(lacking)} (no userfaultfd): using stop-and-copy",
                        phase="preparing", memory_transfer="stop-and-copy")
            return False
        return True

    def _lazy_restore(self, m: dict[str, Any], amid: str, dst: AgentClient,
                      freeze_start: float | None, reprepare: Callable[[], None] | None) -> int:
        """Past post-copy's commit point: restore (idempotent), then verify until the pod
        answers; returns the freeze in ms (0 when resumed by a later run). A destination
        restarted meanwhile gets the migration key again (`reprepare`, this run only: the
        key is never written down)."""
        try:
            self._retry("lazy restore", lambda: dst.restore(amid))
        except AgentError as err:
            if err.code != "key_unavailable" or reprepare is None:
                raise
            self._retry("prepare destination again", reprepare)
            self._retry("lazy restore", lambda: dst.restore(amid))
        deadline = time.monotonic() + self.opts.recovery_timeout_s
        while True:
            v = self._retry("verify", lambda: dst.verify(amid))
            if v.get("ok"):
                break
            if time.monotonic() > deadline:
                raise MigrationFailed(f"verification failed: {v.get('reason')}")
            time.sleep(0.2)
        return int((time.monotonic() - freeze_start) * 1000) if freeze_start else 0

    def _precopy(self, m: dict[str, Any], src: AgentClient, amid: str) -> int:
        """Pre-copy rounds while the pod runs; returns the number of rounds done."""
        if m["strategy"]["memory_transfer"] != "iterative":
            return 0
        if not src.capabilities().get("features", {}).get("dirty_tracking"):
            return 0
        threshold = parse_bandwidth("1Gbps") * parse_duration_ms(
            m["strategy"].get("freeze_budget", "300ms")) // 1000
        rounds = 0
        for r in range(int(m["strategy"].get("max_rounds", 5))):
            res = src.checkpoint(amid, round=r, final=False)
            rounds = r + 1
            self._event("apply_progress", m, f"{m['pod']}: pre-copy round {r}",
                        phase="checkpointing", round=r, bytes=int(res.get("bytes", 0)))
            if int(res.get("dirty_bytes", 0)) <= threshold:
                break
        return rounds

    def _roll_back(self, m: dict[str, Any], attempt: int, reached: str, exc: Exception,
                   started: float, *, retry: bool = False) -> Outcome:
        mid, amid = m["id"], self.agent_mid(m["id"], attempt)
        error = str(exc)
        self.journal.phase(mid, "rolling_back", attempt, error=error, reached=reached)
        timeout = self._timeout(m)
        src, _ = self._client(m["from"], timeout)
        dst, _ = self._client(m["to"], timeout)
        dest_may_run = PHASE_ORDER.index(reached) >= PHASE_ORDER.index("restoring") \
            if reached in PHASE_ORDER else True
        try:
            self._retry("rollback destination", lambda: dst.rollback(amid))
        except AgentUnreachable:
            if dest_may_run:
                return self._failed(m, attempt, reached, f"{error}; destination agent "
                                    "unreachable during rollback: pod state unknown", started)
        except AgentError as err:
            if err.code == "committed":
                return self._finish_commit(m, attempt, started, 0)
            return self._failed(m, attempt, reached, f"{error}; destination rollback refused: "
                                f"{err}", started)
        try:
            self._retry("rollback source", lambda: src.rollback(amid))
        except AgentError as err:
            if err.code == "committed":  # the source already committed: roll forward
                return self._finish_commit(m, attempt, started, 0)
            return self._failed(m, attempt, reached, f"{error}; source rollback refused: {err}",
                                started)
        except AgentUnreachable:
            return self._failed(m, attempt, reached, f"{error}; source agent unreachable "
                                "during rollback: pod frozen on its source", started)
        self.journal.phase(mid, "rolled_back", attempt, error=error, reached=reached,
                           retry=retry)
        duration = int((time.monotonic() - started) * 1000)
        policy = m.get("on_failure", "rollback")
        if not retry:
            if policy == "evict":
                with self._writer_lock:
                    self.writer.request_eviction(m["pod"])
            elif policy == "abort":
                self.abort.set()
        if retry:  # an interrupted attempt: the migration is tried again right away
            self._event("apply_errored", m, f"{m['pod']}: rolled back to {m['from']} "
                        f"({error}); trying again", level="warn", phase=reached,
                        outcome="rolled_back", error=error, recovered=True, retry=True)
        else:
            self._event("apply_errored", m, f"{m['pod']}: rolled back to {m['from']} "
                        f"({error})", level="error", phase=reached, outcome="rolled_back",
                        error=error, on_failure=policy)
        return self._outcome(m, "rolled_back", "source", phase=reached, error=error,
                             duration_ms=duration)

    def _failed(self, m: dict[str, Any], attempt: int, reached: str, error: str,
                started: float) -> Outcome:
        self.journal.phase(m["id"], "failed", attempt, error=error, reached=reached,
                           needs_recovery=True)
        self._event("apply_errored", m, f"{m['pod']}: FAILED ({error}); re-run apply to "
                    "recover", level="error", phase=reached, outcome="failed", error=error)
        return self._outcome(m, "failed", "unknown", phase=reached, error=error,
                             duration_ms=int((time.monotonic() - started) * 1000))

    def _finish_commit(self, m: dict[str, Any], attempt: int, started: float,
                       freeze_ms: int, *, post_copy: bool = False,
                       freeze_start: float | None = None,
                       reprepare: Callable[[], None] | None = None) -> Outcome:
        mid, amid = m["id"], self.agent_mid(m["id"], attempt)
        timeout = self._timeout(m)
        src, _ = self._client(m["from"], timeout)
        dst, _ = self._client(m["to"], timeout)
        try:
            if post_copy:
                freeze_ms = self._lazy_restore(m, amid, dst, freeze_start, reprepare)
            # (post-copy: the source's commit returns once every page has left it)
            self._retry("commit source", lambda: src.commit(amid))
            self._retry("commit destination", lambda: dst.commit(amid))
        except (AgentClientError, MigrationFailed) as exc:
            # Past the commit point nothing is undone; the next run finishes the commit.
            self._event("apply_errored", m, f"{m['pod']}: commit not confirmed ({exc}); "
                        "re-run apply to finish", level="error", phase="committing",
                        outcome="failed", error=str(exc))
            return self._outcome(m, "failed", "destination", phase="committing",
                                 error=str(exc))
        mismatch = self._record_move(m)
        if mismatch is not None:
            return mismatch
        duration = int((time.monotonic() - started) * 1000)
        self.journal.phase(mid, "committed", attempt, freeze_ms=freeze_ms,
                           duration_ms=duration)
        self._event("apply_complete", m, f"{m['pod']}: migrated to {m['to']}",
                    outcome="migrated", freeze_ms=freeze_ms, duration_ms=duration)
        return self._outcome(m, "migrated", "destination", phase="committed",
                             freeze_ms=freeze_ms, duration_ms=duration)

    # -- recovery ----------------------------------------------------------------------------
    def _recover(self, rec: MigrationRecord) -> int | None:
        """Settle a migration an earlier run left in flight; returns the next attempt to run,
        or None when the migration is settled for good.

        Every migration settled here gets its closing event again (`recovered: true`): the
        run that settled it may have been killed between its journal record and its event,
        and a reader of this run's events must see each migration end.

        A migration rolled back because an earlier apply stopped (not because it failed) is
        always tried again, with a new attempt number (the agents refuse a rolled-back
        migration id): being interrupted is not a failure of the migration.
        """
        m = self.migrations[rec.mid]
        started = time.monotonic()
        if rec.phase == "committed":
            if self._record_move(m) is not None:
                return None
            o = self._outcome(m, "migrated", "destination", phase="committed",
                              freeze_ms=int(rec.detail.get("freeze_ms", 0)),
                              duration_ms=int(rec.detail.get("duration_ms", 0)))
            self._event("apply_complete", m, f"{m['pod']}: migrated to {m['to']}",
                        outcome="migrated", freeze_ms=o.freeze_ms, duration_ms=o.duration_ms,
                        recovered=True)
            return None
        if past_commit_point(rec.phase) or (rec.phase == "failed" and
                                            rec.detail.get("reached") == "committing"):
            self._event("apply_progress", m, f"{m['pod']}: finishing an interrupted commit",
                        phase="committing", recovered=True)
            self._finish_commit(m, rec.attempt, started, int(rec.detail.get("freeze_ms", 0)),
                                post_copy=bool(rec.detail.get("post_copy")))
            return None
        if rec.phase == "skipped":
            self._outcome(m, "skipped", "source", error=rec.error)
            self._event("apply_skipped", m, f"{m['pod']}: skipped: {rec.error}",
                        outcome="skipped", error=rec.error, recovered=True)
            return None
        if rec.phase == "rolled_back":
            if rec.detail.get("retry"):  # rolled back after an interruption: try again
                self._event("apply_errored", m, f"{m['pod']}: rolled back to {m['from']} "
                            "after an interruption; trying again", level="warn",
                            phase=str(rec.detail.get("reached", "")), outcome="rolled_back",
                            error=rec.error, recovered=True, retry=True)
                return rec.attempt + 1
            self._outcome(m, "rolled_back", "source", phase=str(rec.detail.get("reached", "")),
                          error=rec.error)
            self._event("apply_errored", m, f"{m['pod']}: rolled back to {m['from']} "
                        f"({rec.error})", level="error", phase=str(rec.detail.get("reached", "")),
                        outcome="rolled_back", error=rec.error, recovered=True)
            return None
        reached = str(rec.detail.get("reached", rec.phase))
        if reached not in PHASE_ORDER:
            reached = "verifying"  # unknown: assume the destination may run the pod
        self._event("apply_progress", m, f"{m['pod']}: rolling back an interrupted "
                    "migration", phase="rolling_back", recovered=True)
        o = self._roll_back(m, rec.attempt, reached, MigrationFailed(
            "interrupted by a previous apply that stopped"), started, retry=True)
        if o.result == "rolled_back":
            del self.outcomes[m["id"]]
            return rec.attempt + 1
        return None

    # -- the walk -----------------------------------------------------------------------------
    def run(self) -> ApplyResult:
        self.sink.emit(version_event())
        self.journal.append("run_start", plan=self.plan["fingerprint"])
        attempts: dict[str, int] = {mid: 0 for mid in self.migrations}
        for mid, rec in self.journal.records().items():
            if mid not in self.migrations or rec.phase == "pending":
                continue
            nxt = self._recover(rec)
            if nxt is not None:
                attempts[mid] = nxt
            else:
                attempts.pop(mid, None)
        pending = {mid for mid in attempts if mid not in self.outcomes}
        running: dict[Future[Outcome], str] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.opts.parallelism)) as pool:
            while pending or running:
                self._settle_blocked(pending)
                if not self.abort.is_set():
                    for mid in sorted(pending):
                        if len(running) >= self.opts.parallelism:
                            break
                        m = self.migrations[mid]
                        if all(self._done(d) == "migrated" or self._done(d) == "rolled_back"
                               for d in m["depends_on"]):
                            pending.discard(mid)
                            running[pool.submit(self._migrate, m, attempts[mid])] = mid
                elif pending:
                    for mid in sorted(pending):
                        self._skip(mid, "apply aborted (a migration failed with onFailure: "
                                   "abort)")
                    pending.clear()
                if not running:
                    for mid in sorted(pending):  # cannot happen in a DAG; never spin
                        self._skip(mid, "dependencies can never be satisfied")
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    running.pop(fut)
                    fut.result()
        labels = self._apply_labels()
        with self._writer_lock:
            self.writer.flush()
        result = ApplyResult(dict(sorted(self.outcomes.items())), labels, self.abort.is_set())
        self.journal.append("run_end", summary={r: result.count(r) for r in (
            "migrated", "rolled_back", "failed", "skipped", "deferred")})
        self.sink.emit(make_event(
            "change_summary", result.summary_line(), operation="apply",
            changes={r: result.count(r) for r in ("migrated", "rolled_back", "failed",
                                                  "skipped", "deferred")},
            labels=labels, outcomes=[o.to_json() for o in result.outcomes.values()]))
        return result

    def _done(self, mid: str) -> str:
        o = self.outcomes.get(mid)
        return o.result if o else ""

    def _settle_blocked(self, pending: set[str]) -> None:
        """Skip what depends on a failed or skipped migration; defer what is out of window."""
        changed = True
        while changed:
            changed = False
            for mid in sorted(pending):
                m = self.migrations[mid]
                bad = [d for d in m["depends_on"] if self._done(d) in ("failed", "skipped")]
                deferred = [d for d in m["depends_on"] if self._done(d) == "deferred"]
                if bad:
                    self._skip(mid, f"dependency {bad[0]} did not migrate")
                elif deferred or not window_open(self.policies[m["policy"]]["windows"],
                                                 self.opts.now()):
                    self._outcome(m, "deferred", "source", error="outside its maintenance "
                                  "window")
                    self._event("apply_skipped", m, f"{m['pod']}: deferred until the "
                                "maintenance window opens", outcome="deferred")
                else:
                    continue
                pending.discard(mid)
                changed = True

    def _skip(self, mid: str, why: str) -> None:
        m = self.migrations[mid]
        self.journal.phase(mid, "skipped", 0, error=why)
        self._outcome(m, "skipped", "source", error=why)
        self._event("apply_skipped", m, f"{m['pod']}: skipped: {why}", outcome="skipped",
                    error=why)

    def _apply_labels(self) -> int:
        """Labels are recorded for every listed pod, whatever its migration's outcome."""
        n = 0
        with self._writer_lock:
            for lc in self.plan["labels"]:
                self.writer.set_label(lc["pod"], lc["key"],
                                      lc["value"] if lc["action"] == "add" else None)
                n += 1
        if n:
            self.journal.append("labels", count=n)
            self.sink.emit(make_event("labels_applied", f"{n} pod label change(s) applied",
                                      count=n))
        return n
