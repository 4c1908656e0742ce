"""The source's checkpoint steps: pre-copy rounds, the final (or lazy) checkpoint, pulls.

A final checkpoint writes the sealed image once and records its hashes; a post-copy one
hands the runtime `on_pull`, which records `lazy_started` (the source's point of no
return) when the destination starts pulling pages, also for a dump served again after a
restart (`_pulled_pod`).
"""

from __future__ import annotations

import time

from livepolicy.agent.crypto import Sink, image_context
from livepolicy.agent.errors import bad_request, conflict
from livepolicy.agent.ids import check_mid
from livepolicy.agent.migrations import MigrationRecord
from livepolicy.agent.runtimes.base import LazyCheckpoint, PodRef, RoundResult
from livepolicy.agent.service_core import (
    MAX_ROUND,
    PULL_LOCK_TIMEOUT_S,
    Json,
    ServiceCore,
    bool_field,
    log,
    ms,
)


class CheckpointSteps(ServiceCore):
    """`checkpoint` and what it needs, for `AgentService`."""

    def checkpoint(self, mid: str, body: Json) -> Json:
        check_mid(mid)
        rnd = body.get("round", 0)
        if not isinstance(rnd, int) or isinstance(rnd, bool) or not 0 <= rnd <= MAX_ROUND:
            raise bad_request(f"round must be an integer in 0..{MAX_ROUND}")
        final = bool_field(body, "final", False)

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
        lock = self._mid_locks.get(mid)
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
            "duration_ms": ms(result.seconds),
        }
