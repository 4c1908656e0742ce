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

The node endpoints live in `service_node`, the source's checkpoint steps in
`service_checkpoint`, the image transfer in `service_transfer`, the shared state and
plumbing in `service_core`; this module holds the migration state machine (prepare,
restore, verify, commit, rollback, cleanup) and ties the parts together.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable

from livepolicy.agent.config import AgentConfig
from livepolicy.agent.crypto import ImageCorrupt, decode_key, image_context, key_id
from livepolicy.agent.errors import ApiError, bad_request, conflict, not_found
from livepolicy.agent.faults import FaultTable
from livepolicy.agent.fsutil import ensure_private_dir
from livepolicy.agent.ids import check_agent_url, check_mid, check_pod_ref, check_uid
from livepolicy.agent.images import ImageStore
from livepolicy.agent.keyed_locks import KeyedLocks
from livepolicy.agent.migrations import MigrationRecord, MigrationStore
from livepolicy.agent.runtimes import make_runtime
from livepolicy.agent.runtimes.base import LazyCheckpoint, PodInfo, PodRef, Runtime
from livepolicy.agent.service_checkpoint import CheckpointSteps
from livepolicy.agent.service_core import TRANSFERS, Json, int_field, log
from livepolicy.agent.service_node import NodeEndpoints
from livepolicy.agent.service_transfer import TransferSteps

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

__all__ = ["AgentService"]


class AgentService(NodeEndpoints, CheckpointSteps, TransferSteps):
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
        self._keys = {}  # migration keys: memory only, never on disk
        self._lock = threading.Lock()
        self._mid_locks = KeyedLocks()
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
        memory = int_field(body, "memory_bytes", default=0)
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
        upload = body.get("upload_token_sha256") or ""
        if not isinstance(upload, str) or (upload and not _SHA256_HEX.fullmatch(upload)):
            raise bad_request("upload_token_sha256 must be 64 lowercase hex digits")
        if upload and role != "destination":
            raise bad_request("upload_token_sha256 is for the destination")
        ref = PodRef(namespace, name)

        def work(_: float) -> Json:
            with self._lock:
                rec = self.migrations.get(mid)
                if rec is not None and rec.phase == "rolled_back" and rec.key_id and \
                        rec.key_id != key_id(key):
                    # Another apply (a new key) of an id that a finished run rolled back:
                    # the same plan applied from another --state-dir. It starts afresh;
                    # the earlier run's late calls carry the old key and stay refused.
                    rec = None
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
                    if upload and upload != rec.upload_sha256:
                        rec.upload_sha256 = upload  # apply restarted with a new grant
                        self.migrations.save(rec)
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
                    upload_sha256=upload,
                )
                rec.history.append(("prepared", round(time.time(), 3)))
                self.migrations.save(rec)
                self._keys[mid] = key
                return self._view(rec)

        return self._step("prepare", mid, work)

    def upload_grant(self, mid: str) -> str:
        """SHA-256 of the token that may PUT this migration's image ("" if none may): only
        for a destination that has not finished."""
        try:
            rec = self.migrations.get(check_mid(mid))
        except ApiError:
            return ""
        if rec is None or rec.role != "destination" or rec.terminal:
            return ""
        return rec.upload_sha256

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
                return {**self._view(tomb), "phase": "unknown"}  # a whole status, as documented
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
