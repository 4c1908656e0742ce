"""The agent's behaviour, without HTTP: one method per endpoint, validated inputs in, dicts out.

Safety rules enforced here, whatever the caller does:
- one commit point per migration (Paguro): the source's `commit` removes the frozen pod;
  before it every failure is undone by `rollback` (resume the source, drop the
  destination's copy), after it `rollback` is refused on both sides. A post-copy
  migration (`memory_transfer: post-copy` at prepare) passes it earlier: when the
  destination starts its lazy restore, and on the source when that destination starts
  pulling pages (`lazy_started`);
- every step is idempotent, so the engine may retry after a timeout or a crash and ask
  `status` what happened;
- a pod takes part in at most one unfinished migration on a node (`pod_busy`);
- images are deleted on commit, rollback and cleanup, and on restart for migrations that
  had already finished or whose image was never confirmed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from livepolicy import __version__
from livepolicy.agent.config import AgentConfig
from livepolicy.agent.crypto import ImageCorrupt, Sink, decode_key, image_context, key_id
from livepolicy.agent.errors import ApiError, bad_request, conflict, not_found
from livepolicy.agent.faults import FaultTable, parse_fault
from livepolicy.agent.fsutil import ensure_private_dir
from livepolicy.agent.ids import (
    check_agent_url,
    check_mid,
    check_namespace,
    check_pod_name,
    check_pod_ref,
    check_uid,
)
from livepolicy.agent.images import COPY_CHUNK, ImageStore, Readable
from livepolicy.agent.migrations import MigrationRecord, MigrationStore
from livepolicy.agent.runtimes import make_runtime
from livepolicy.agent.runtimes.base import (
    LazyCheckpoint,
    PodInfo,
    PodRef,
    RoundResult,
    Runtime,
)

log = logging.getLogger("livepolicy.agent")

API_VERSION = "v1"
CRASH_EXIT_CODE = 3
MAX_BYTES = 2**50  # 1 PiB: larger sizes are typos
MAX_ROUND = 10_000
MAX_TOKEN = 4096
PULL_LOCK_TIMEOUT_S = 10.0
TRANSFERS = ("stop-and-copy", "iterative", "post-copy")

Json = dict[str, Any]


def _int_field(body: Json, name: str, *, default: int | None = None, lo: int = 0) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= MAX_BYTES:
        raise bad_request(f"{name} must be an integer in {lo}..{MAX_BYTES}")
    return value


def _bool_field(body: Json, name: str, default: bool | None = None) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false")
    return value


def _drain_sha256(body: Readable, length: int) -> str:
    sha = hashlib.sha256()
    remaining = length
    while remaining > 0:
        block = body.read(min(COPY_CHUNK, remaining))
        if not block:
            break
        sha.update(block)
        remaining -= len(block)
    return sha.hexdigest()


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class AgentService:
    """State and behaviour of one agent; thread-safe (one lock per migration id)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        runtime: Runtime | None = None,
        stop: threading.Event | None = None,
        exit_hook: Callable[[int], object] = os._exit,
    ) -> None:
        config.validate()
        self.config = config
        self.stop = stop or threading.Event()
        ensure_private_dir(config.state_dir)
        self.runtime = runtime or make_runtime(config, self.stop)
        self.images = ImageStore(config.state_dir, config.max_image_bytes)
        self.migrations = MigrationStore(config.state_dir)
        self.faults = FaultTable()
        self._exit = exit_hook
        self._keys: dict[str, bytes] = {}  # migration keys: memory only, never on disk
        self._lock = threading.Lock()
        self._mid_locks: dict[str, threading.Lock] = {}
        if hasattr(self.runtime, "pull_hook"):  # criu: pulls of dumps served again
            self.runtime.pull_hook = self._pulled_pod
        self._recover()

    # -- startup -------------------------------------------------------------------------
    def _recover(self) -> None:
        """Bring the image store in line with the records after a crash."""
        self.images.remove_partial_uploads()
        records = {r.mid: r for r in self.migrations.all()}
        for mid in self.images.list_mids():
            try:
                check_mid(mid)
            except ApiError:
                log.warning("recovery: ignoring unexpected entry %r in the image store", mid)
                continue
            rec = records.get(mid)
            stale = (
                rec is None
                or rec.terminal
                or (rec.role == "source" and rec.phase in ("prepared", "precopy"))
                or (rec.role == "destination" and rec.phase == "prepared")
            )
            if stale:
                log.info("recovery: deleting unconfirmed or finished image for %s", mid)
                self.images.delete(mid)

    # -- plumbing ------------------------------------------------------------------------
    @contextmanager
    def _locked(self, mid: str) -> Iterator[None]:
        with self._lock:
            lock = self._mid_locks.setdefault(mid, threading.Lock())
        with lock:
            yield

    def _fault(self, phase: str, mid: str | None, when: str) -> float:
        """Fire an armed fault, if any; returns the slowdown factor for this phase."""
        fault = self.faults.take(phase, mid, when)
        if fault is None:
            return 1.0
        log.warning("injected fault: %s %s at %s (%s)", fault.mode, phase, when, mid)
        if fault.mode == "crash":
            self._exit(CRASH_EXIT_CODE)
            # Only reached when a test replaced os._exit with a hook that returns.
            raise ApiError(500, "crashed", f"simulated crash at {phase} ({when})")
        if fault.mode == "fail":
            raise ApiError(500, "injected_fault", f"injected failure at {phase} ({when})")
        if fault.mode == "hang":
            if self.stop.wait(fault.seconds):
                raise ApiError(503, "shutting_down", "agent is stopping")
            return 1.0
        return fault.factor

    def _step(self, phase: str, mid: str, work: Callable[[float], Json]) -> Json:
        slowdown = self._fault(phase, mid, "before")
        with self._locked(mid):
            result = work(slowdown)
        self._fault(phase, mid, "after")
        return result

    def _record(self, mid: str, role: str | None = None) -> MigrationRecord:
        rec = self.migrations.get(mid)
        if rec is None:
            raise not_found("unknown_migration", f"migration {mid} is not known to this agent")
        if role is not None and rec.role != role:
            raise conflict("wrong_role", f"this agent is the {rec.role} of migration {mid}")
        return rec

    def _key(self, rec: MigrationRecord) -> bytes:
        key = self._keys.get(rec.mid)
        if key is None:
            raise conflict(
                "key_unavailable",
                "the migration key is not in memory (agent restarted?): call prepare again",
            )
        return key

    @staticmethod
    def _refuse_rolled_back(rec: MigrationRecord) -> None:
        # After a rollback nothing may move forward again (a new migration id is needed).
        # After commit, forward steps answer with what they recorded (replays are safe).
        if rec.phase == "rolled_back":
            raise conflict("rolled_back", f"migration {rec.mid} was rolled back")

    def _pod_state(self, rec: MigrationRecord) -> tuple[str, int | None]:
        pod = self.runtime.get_pod(PodRef(rec.namespace, rec.name))
        if pod is None or pod.uid != rec.uid:
            return "absent", None
        return pod.state, pod.counter

    def _view(self, rec: MigrationRecord) -> Json:
        pod_state, counter = self._pod_state(rec)
        return {
            "mid": rec.mid,
            "role": rec.role,
            "phase": rec.phase,
            "pod": rec.pod,
            "uid": rec.uid,
            "pod_state": pod_state,
            "counter": counter,
            "image_bytes": self.images.size(rec.mid),
            "image_sha256": rec.image_sha256,
            "state_sha256": rec.state_sha256,
            "key_loaded": rec.mid in self._keys,
            "precopy_rounds": rec.precopy_rounds,
            "post_copy": rec.post_copy,
            "lazy_started": rec.lazy_started,
            "last_round": rec.last_round,
            "last_result": rec.last_result,
            "peer": rec.peer,
            "history": [list(h) for h in rec.history],
            "updated_at": rec.updated_at,
        }

    # -- node ----------------------------------------------------------------------------
    def health(self) -> Json:
        return {
            "status": "ok",
            "node": self.config.node,
            "runtime": self.runtime.name,
            "version": __version__,
        }

    def capabilities(self) -> Json:
        f = self.runtime.features()
        return {
            "node": self.config.node,
            "architecture": self.config.architecture,
            "runtime": self.runtime.name,
            "version": __version__,
            "api_version": API_VERSION,
            "features": {
                "dirty_tracking": f.dirty_tracking,
                "post_copy": f.post_copy,
                "tcp_established": f.tcp_established,
            },
            "fault_injection": f.fault_injection,
            "max_image_bytes": self.config.max_image_bytes,
            "max_json_bytes": self.config.max_json_bytes,
            "tls": self.config.tls_enabled,
        }

    def list_pods(self) -> Json:
        return {"pods": [p.to_json() for p in self.runtime.list_pods()]}

    def put_pod(self, namespace: str, name: str, body: Json) -> tuple[int, Json]:
        ref = PodRef(check_namespace(namespace), check_pod_name(name))
        uid = check_uid(body.get("uid"))
        memory = _int_field(body, "memory_bytes", lo=1)
        dirty = _int_field(body, "dirty_rate_bytes", default=0)
        pod, created = self.runtime.put_pod(ref, uid, memory, dirty)
        return (201 if created else 200), {"pod": pod.to_json(), "created": created}

    # -- migrations ----------------------------------------------------------------------
    def list_migrations(self) -> Json:
        recs = sorted(self.migrations.all(), key=lambda r: r.created_at)
        return {"migrations": [self._view(r) for r in recs]}

    def status(self, mid: str) -> Json:
        return self._view(self._record(check_mid(mid)))

    def prepare(self, mid: str, body: Json) -> Json:
        check_mid(mid)
        role = body.get("role")
        if role not in ("source", "destination"):
            raise bad_request("role must be 'source' or 'destination'")
        namespace, name = check_pod_ref(body.get("pod"))
        uid = check_uid(body.get("uid"))
        memory = _int_field(body, "memory_bytes", default=0)
        try:
            key = decode_key(body.get("key"))
        except ValueError as exc:
            raise bad_request(str(exc), "invalid_key") from None
        peer = body.get("peer") or ""
        if peer:
            check_agent_url(peer, "peer")
        transfer = body.get("memory_transfer", "stop-and-copy")
        if transfer not in TRANSFERS:
            raise bad_request(f"memory_transfer must be one of {', '.join(TRANSFERS)}")
        post_copy = transfer == "post-copy"
        if post_copy and not (self.runtime.features().post_copy and
                              isinstance(self.runtime, LazyCheckpoint)):
            raise conflict("post_copy_unavailable", "this node does not offer post-copy "
                           "(lazy pages need userfaultfd): use stop-and-copy")
        ref = PodRef(namespace, name)

        def work(_: float) -> Json:
            with self._lock:
                rec = self.migrations.get(mid)
                if rec is not None:
                    if rec.role == "none":  # rolled back before it was ever prepared
                        self._refuse_rolled_back(rec)
                    if (rec.role, rec.namespace, rec.name, rec.uid) != (role, namespace, name, uid):
                        raise conflict(
                            "migration_conflict",
                            f"migration {mid} was prepared with another role or pod",
                        )
                    if rec.key_id != key_id(key):
                        raise conflict("key_mismatch", f"migration {mid} has another key")
                    self._refuse_rolled_back(rec)
                    self._keys[mid] = key
                    return self._view(rec)
                for other in self.migrations.all():
                    if not other.terminal and (other.namespace, other.name) == (namespace, name):
                        raise conflict(
                            "pod_busy",
                            f"pod {ref.key} is in unfinished migration {other.mid} "
                            f"({other.role}, {other.phase}): commit or roll it back first",
                        )
                pod = self.runtime.get_pod(ref)
                if role == "source":
                    if pod is None:
                        raise not_found("pod_not_found", f"pod {ref.key} is not on this node")
                    if pod.uid != uid:
                        raise conflict("uid_mismatch", f"pod {ref.key} has another uid")
                    if pod.state != "running":
                        raise conflict("pod_not_running", f"pod {ref.key} is {pod.state}")
                elif pod is not None:
                    raise conflict("pod_exists", f"pod {ref.key} already exists on this node")
                rec = MigrationRecord(
                    mid=mid,
                    role=str(role),
                    namespace=namespace,
                    name=name,
                    uid=uid,
                    memory_bytes=memory,
                    peer=str(peer),
                    key_id=key_id(key),
                    post_copy=post_copy,
                )
                rec.history.append(("prepared", round(time.time(), 3)))
                self.migrations.save(rec)
                self._keys[mid] = key
                return self._view(rec)

        return self._step("prepare", mid, work)

    def checkpoint(self, mid: str, body: Json) -> Json:
        check_mid(mid)
        rnd = body.get("round", 0)
        if not isinstance(rnd, int) or isinstance(rnd, bool) or not 0 <= rnd <= MAX_ROUND:
            raise bad_request(f"round must be an integer in 0..{MAX_ROUND}")
        final = _bool_field(body, "final", False)

        def work(slowdown: float) -> Json:
            rec = self._record(mid, "source")
            self._refuse_rolled_back(rec)
            ref = PodRef(rec.namespace, rec.name)
            frozen = rec.phase in ("checkpointed", "transferred", "committing", "committed")
            if frozen and rec.last_result is not None:
                if final:
                    return rec.last_result  # the final checkpoint already happened
                raise conflict("already_frozen", "the final checkpoint was taken already")
            if not final:
                return self._precopy(rec, ref, rnd, slowdown)
            key = self._key(rec)
            pod = self.runtime.get_pod(ref)
            if pod is None or pod.uid != rec.uid:
                raise conflict("pod_not_found", f"pod {ref.key} is no longer on this node")
            context = image_context(mid, rec.namespace, rec.name, rec.uid)
            runtime = self.runtime
            if rec.post_copy and isinstance(runtime, LazyCheckpoint):
                lazy_rt = runtime

                def write(sink: Sink) -> RoundResult:
                    return lazy_rt.checkpoint_lazy(ref, sink, on_pull=lambda: self._pulled(mid))
            else:

                def write(sink: Sink) -> RoundResult:
                    return runtime.checkpoint(ref, sink, previous_dirty_bytes=(
                        rec.pending_dirty_bytes), slowdown=slowdown)

            result, info, plain_sha = self.images.write_encrypted(mid, key, context, write)
            out = self._round_json(rnd, result)
            out.update({"image_bytes": info.bytes, "state_sha256": plain_sha})
            rec.final_bytes = result.bytes
            rec.image_bytes, rec.image_sha256, rec.state_sha256 = info.bytes, info.sha256, plain_sha
            rec.last_round, rec.last_result = rnd, out
            rec.set_phase("checkpointed")
            self.migrations.save(rec)
            return out

        return self._step("checkpoint", mid, work)

    def _pulled(self, mid: str) -> bool:
        """The destination of post-copy migration `mid` started pulling this source's
        pages: past the point of no return here too (unless rolled back already)."""
        with self._lock:
            lock = self._mid_locks.setdefault(mid, threading.Lock())
        if not lock.acquire(timeout=PULL_LOCK_TIMEOUT_S):
            log.warning("post-copy %s: pull refused, the migration is busy", mid)
            return False
        try:
            rec = self.migrations.get(mid)
            if rec is None or rec.phase in ("rolled_back", "prepared", "precopy"):
                return False
            if not rec.lazy_started:
                rec.lazy_started = True
                rec.history.append(("lazy_started", round(time.time(), 3)))
                self.migrations.save(rec)
            return True
        finally:
            lock.release()

    def _pulled_pod(self, ref: PodRef) -> bool:
        """`_pulled` for the source migration of `ref` (a lazy dump served again)."""
        for rec in self.migrations.all():
            if (rec.role, rec.namespace, rec.name) == ("source", ref.namespace, ref.name) \
                    and rec.post_copy and not rec.terminal:
                return self._pulled(rec.mid)
        return False

    def _precopy(self, rec: MigrationRecord, ref: PodRef, rnd: int, slowdown: float) -> Json:
        if rec.post_copy:
            raise conflict("post_copy", "a post-copy migration has no pre-copy rounds")
        if not self.runtime.features().dirty_tracking:
            raise conflict(
                "dirty_tracking_unavailable",
                "this node cannot track dirty memory: only final (stop-and-copy) checkpoints",
            )
        if rnd == rec.last_round and rec.last_result is not None:
            return rec.last_result  # a retried round
        if rnd < rec.last_round:
            raise conflict("stale_round", f"round {rnd} is older than round {rec.last_round}")
        previous = rec.pending_dirty_bytes if rec.precopy_rounds else None
        result = self.runtime.precopy(ref, previous_dirty_bytes=previous, slowdown=slowdown)
        out = self._round_json(rnd, result)
        rec.precopy_rounds += 1
        rec.pending_dirty_bytes = result.dirty_bytes
        rec.last_round, rec.last_result = rnd, out
        rec.set_phase("precopy")
        self.migrations.save(rec)
        return out

    @staticmethod
    def _round_json(rnd: int, result: RoundResult) -> Json:
        return {
            "round": rnd,
            "bytes": result.bytes,
            "dirty_bytes": result.dirty_bytes,
            "frozen": result.frozen,
            "duration_ms": _ms(result.seconds),
        }

    def transfer(self, mid: str, body: Json) -> Json:
        check_mid(mid)
        token = body.get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
            raise bad_request("token (the destination agent's token) is required")
        if any(c.isspace() or not c.isprintable() or ord(c) > 126 for c in token):
            raise bad_request("token must be printable ASCII without spaces")
        force = _bool_field(body, "force", False)
        destination = body.get("destination")

        def work(slowdown: float) -> Json:
            rec = self._record(mid, "source")
            self._refuse_rolled_back(rec)
            dest = check_agent_url(destination or rec.peer, "destination")
            if rec.phase in ("prepared", "precopy"):
                raise conflict("not_checkpointed", "take the final checkpoint before transfer")
            done = rec.phase == "transferred" and rec.transferred_to == dest and not force
            if done or rec.phase in ("committing", "committed"):
                return {"bytes": rec.image_bytes, "sha256": rec.image_sha256, "duration_ms": 0}
            if self.images.size(mid) == 0:
                raise conflict("no_image", f"the image of {mid} is gone (cleaned up?)")
            seconds = self.runtime.link_delay(rec.final_bytes, slowdown)
            answer = self._send_image(mid, dest, token)
            if answer.get("sha256") != rec.image_sha256:
                raise ApiError(502, "transfer_corrupt", "destination stored different bytes")
            rec.transferred_to = dest
            rec.set_phase("transferred")
            self.migrations.save(rec)
            return {
                "bytes": rec.image_bytes,
                "sha256": rec.image_sha256,
                "duration_ms": _ms(seconds),
            }

        return self._step("transfer", mid, work)

    def _peer_connection(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(url)
        timeout = self.config.peer_timeout
        host = parts.hostname or ""
        if parts.scheme == "https":
            ctx = ssl.create_default_context(
                cafile=str(self.config.tls_ca_file) if self.config.tls_ca_file else None
            )
            if self.config.tls_cert_file and self.config.tls_key_file:
                ctx.load_cert_chain(self.config.tls_cert_file, self.config.tls_key_file)
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, parts.port, timeout=timeout, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        return conn, parts.path.rstrip("/")

    def _send_image(self, mid: str, dest: str, token: str) -> Json:
        """Stream the encrypted image to the destination agent's PUT /image."""
        size = self.images.size(mid)
        conn, prefix = self._peer_connection(dest)
        rec = self._record(mid)
        try:
            with self.images.open(mid) as fh:
                try:
                    conn.putrequest("PUT", f"{prefix}/v1/migrations/{mid}/image")
                    conn.putheader("Authorization", f"Bearer {token}")
                    conn.putheader("Content-Type", "application/octet-stream")
                    conn.putheader("Content-Length", str(size))
                    conn.putheader("X-Image-Sha256", rec.image_sha256)
                    conn.endheaders()
                    for block in iter(lambda: fh.read(COPY_CHUNK), b""):
                        conn.send(block)
                except OSError:
                    pass  # the peer may have refused early: its answer says why
                resp = conn.getresponse()
                raw = resp.read(1 << 16)
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(502, "peer_unreachable", f"destination {dest}: {exc}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if resp.status != 200 or not isinstance(answer, dict):
            err = answer.get("error", {}) if isinstance(answer, dict) else {}
            code = err.get("code", "?") if isinstance(err, dict) else "?"
            message = err.get("message", "") if isinstance(err, dict) else ""
            raise ApiError(
                502, "peer_error", f"destination answered {resp.status} ({code}): {message}"
            )
        return answer

    def receive_image(
        self, mid: str, body: Readable, length: int, expected_sha256: str | None
    ) -> Json:
        check_mid(mid)

        def work(_: float) -> Json:
            rec = self._record(mid, "destination")
            self._refuse_rolled_back(rec)
            if rec.phase not in ("prepared", "received"):
                # A re-sent copy of the image we restored from (source retried after a
                # crash) is acknowledged; anything else is refused.
                if expected_sha256 == rec.image_sha256 and _drain_sha256(body, length) == (
                    rec.image_sha256
                ):
                    return {"bytes": rec.image_bytes, "sha256": rec.image_sha256}
                raise conflict("already_restored", f"migration {mid} is past receiving")
            info = self.images.receive(mid, body, length, expected_sha256)
            rec.image_bytes, rec.image_sha256 = info.bytes, info.sha256
            rec.set_phase("received")
            self.migrations.save(rec)
            return {"bytes": info.bytes, "sha256": info.sha256}

        return self._step("receive", mid, work)

    def restore(self, mid: str) -> Json:
        check_mid(mid)

        def work(slowdown: float) -> Json:
            rec = self._record(mid, "destination")
            self._refuse_rolled_back(rec)
            ref = PodRef(rec.namespace, rec.name)
            if rec.phase == "prepared":
                raise conflict("no_image", f"no image received for {mid}")
            pod: PodInfo | None = None
            if rec.phase == "received":
                key = self._key(rec)
                context = image_context(mid, rec.namespace, rec.name, rec.uid)
                if rec.post_copy and not rec.lazy_started:
                    # The point of no return, recorded before it is passed: once the lazy
                    # restore starts, the pod's memory lives in both places at once.
                    rec.lazy_started = True
                    rec.history.append(("lazy_started", round(time.time(), 3)))
                    self.migrations.save(rec)
                try:
                    pod, sha = self.runtime.restore(
                        ref, rec.uid, mid, self.images.decrypt(mid, key, context), slowdown
                    )
                except ImageCorrupt as exc:
                    raise ApiError(422, "image_corrupt", str(exc)) from None
                rec.state_sha256 = sha
                rec.set_phase("restored")
                self.migrations.save(rec)
            else:
                pod = self.runtime.get_pod(ref)
            state = pod.state if pod is not None else "absent"
            return {
                "pod": rec.pod,
                "state": state,
                "counter": pod.counter if pod is not None else None,
                "state_sha256": rec.state_sha256,
            }

        return self._step("restore", mid, work)

    def verify(self, mid: str) -> Json:
        check_mid(mid)

        def work(_: float) -> Json:
            rec = self._record(mid, "destination")
            if rec.phase not in ("restored", "verified", "committed"):
                raise conflict("not_restored", f"migration {mid} is {rec.phase}")
            ref = PodRef(rec.namespace, rec.name)
            result = self.runtime.verify(ref, mid, rec.state_sha256)
            ok, reason = result.ok, result.reason
            if ok and rec.phase != "committed":
                info = self.images.info(mid)
                if info is not None and info.sha256 != rec.image_sha256:
                    ok, reason = False, "image on disk changed since it was received"
            if ok and rec.phase == "restored":
                rec.set_phase("verified")
                self.migrations.save(rec)
            return {
                "ok": ok,
                "pod": rec.pod,
                "counter": result.counter,
                "state_sha256": rec.state_sha256,
                "reason": reason,
            }

        return self._step("verify", mid, work)

    def commit(self, mid: str) -> Json:
        check_mid(mid)

        def work(_: float) -> Json:
            rec = self._record(mid)
            if rec.phase == "rolled_back":
                raise conflict("rolled_back", f"migration {mid} was rolled back")
            if rec.phase != "committed":
                if rec.role == "source":
                    self._commit_source(rec)
                else:
                    if rec.phase != "verified":
                        raise conflict("not_verified", "verify the restored pod before commit")
                    self.images.delete(mid)
                    rec.set_phase("committed")
                    self.migrations.save(rec)
                self._keys.pop(mid, None)
            return self._view(rec)

        return self._step("commit", mid, work)

    def _commit_source(self, rec: MigrationRecord) -> None:
        if rec.phase not in ("transferred", "committing"):
            raise conflict("not_transferred", f"migration {rec.mid} is {rec.phase}")
        ref = PodRef(rec.namespace, rec.name)
        pod = self.runtime.get_pod(ref)
        if pod is not None and pod.uid == rec.uid and pod.state == "running":
            raise conflict("pod_running", f"source pod {ref.key} is running: not removing it")
        rec.set_phase("committing")  # the commit point: rollback is refused from here on
        self.migrations.save(rec)
        if pod is not None and pod.uid == rec.uid:
            self.runtime.remove(ref, rec.uid)
        self.images.delete(rec.mid)
        rec.set_phase("committed")
        self.migrations.save(rec)

    def rollback(self, mid: str) -> Json:
        check_mid(mid)

        def work(_: float) -> Json:
            rec = self.migrations.get(mid)
            if rec is None:
                # Remember the rollback: a prepare still on its way (a hung call) must not
                # land afterwards and leave a record that keeps the pod busy.
                self.images.delete(mid)
                tomb = MigrationRecord(mid=mid, role="none", namespace="", name="", uid="",
                                       memory_bytes=0, peer="", key_id="", phase="rolled_back")
                tomb.history.append(("rolled_back", round(time.time(), 3)))
                self.migrations.save(tomb)
                return {"mid": mid, "phase": "unknown", "pod_state": "absent"}
            if rec.phase in ("committing", "committed") or rec.lazy_started:
                raise conflict("committed", f"migration {mid} passed its commit point")
            ref = PodRef(rec.namespace, rec.name)
            pod = self.runtime.get_pod(ref)
            if rec.role == "source":
                if pod is not None and pod.uid == rec.uid and pod.state == "frozen":
                    self.runtime.resume(ref)
            elif pod is not None and pod.restored_by == mid:
                self.runtime.remove(ref, pod.uid)
            self.images.delete(mid)
            self._keys.pop(mid, None)
            rec.set_phase("rolled_back")
            self.migrations.save(rec)
            return self._view(rec)

        return self._step("rollback", mid, work)

    def cleanup(self, mid: str) -> Json:
        check_mid(mid)

        def work(_: float) -> Json:
            deleted = self.images.delete(mid)
            return {"mid": mid, "deleted": deleted}

        return self._step("cleanup", mid, work)

    # -- faults --------------------------------------------------------------------------
    def _need_faults(self) -> None:
        if not self.runtime.features().fault_injection:
            raise not_found("not_found", "fault injection is only available with the sim runtime")

    def list_faults(self) -> Json:
        self._need_faults()
        return {"faults": [f.to_json() for f in self.faults.list()]}

    def add_fault(self, body: Json) -> Json:
        self._need_faults()
        self.faults.add(parse_fault(body))
        return self.list_faults()

    def clear_faults(self) -> Json:
        self._need_faults()
        return {"cleared": self.faults.clear()}
