"""One migration driven through the agents' HTTP API, in the apply engine's order.

prepare (source, destination) -> pre-copy rounds (only where the source tracks dirty
memory) -> final checkpoint (the freeze starts) -> transfer -> restore -> verify (the
freeze ends: the pod answers on its new node) -> commit (source, then destination). Any
failure before the commit point rolls back, destination first, so the pod resumes on
its source. With `post_copy` the final checkpoint is a lazy dump and the commit point
moves up to the destination's lazy restore: from `restore` on, only forward; the source's
commit returns once the destination has pulled every page. Used by `livepolicy lab
move`, the lab tests and the benchmark; `livepolicy apply` does the same through its
engine.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from livepolicy.agent.client import AgentClientError, AgentError
from livepolicy.agent.crypto import new_key
from livepolicy.lab.lab import Lab, LabError


@dataclass
class MoveResult:
    mid: str
    pod: str
    source: str
    destination: str
    ok: bool
    reached: str = ""
    error: str = ""
    error_code: str = ""
    rolled_back: bool = False
    strategy: str = "stop-and-copy"
    rounds: int = 0
    image_bytes: int = 0  # the sealed image that went through the agents' API
    memory_bytes: int = 0  # what the final checkpoint copied (pages, sent node to node)
    freeze_s: float = 0.0
    total_s: float = 0.0
    steps_s: dict[str, float] = field(default_factory=dict)
    counter: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def move_pod(lab: Lab, pod: str, destination: str, *, mid: str | None = None,
             iterative: bool = True, max_rounds: int = 5, timeout: float = 900.0,
             precopy_threshold: int = 32 * 2**20, post_copy: bool = False) -> MoveResult:
    src_node, rec = lab.find_pod(pod)
    dst_node = lab.node(destination)
    if src_node.name == dst_node.name:
        raise LabError(f"pod {rec.key} already runs on {destination}")
    src, dst = src_node.client(timeout), dst_node.client(timeout)
    mid = mid or f"lab-{secrets.token_hex(5)}"
    res = MoveResult(mid, rec.key, src_node.name, dst_node.name, ok=False,
                     strategy="post-copy" if post_copy else "stop-and-copy")
    transfer = "post-copy" if post_copy else None
    key = new_key()
    started = time.monotonic()
    mark = started

    def step(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        if res.reached:
            res.steps_s[res.reached] = round(now - mark, 4)
        res.reached, mark = name, now

    freeze_start = 0.0
    try:
        step("prepare")
        src.prepare(mid, role="source", pod=rec.key, uid=rec.uid,
                    memory_bytes=rec.memory_bytes, key=key, peer=dst_node.agent_url,
                    memory_transfer=transfer)
        dst.prepare(mid, role="destination", pod=rec.key, uid=rec.uid,
                    memory_bytes=rec.memory_bytes, key=key, peer=src_node.agent_url,
                    memory_transfer=transfer)
        rounds = 0
        tracks = src.capabilities().get("features", {}).get("dirty_tracking")
        if not post_copy and iterative and tracks:
            step("precopy")
            for r in range(max_rounds):
                out = src.checkpoint(mid, round=r, final=False)
                rounds = r + 1
                if int(out.get("dirty_bytes", 0)) <= precopy_threshold:
                    break
        res.rounds = rounds + 1
        step("checkpoint")
        freeze_start = time.monotonic()
        final = src.checkpoint(mid, round=rounds, final=True)
        res.image_bytes = int(final.get("image_bytes", 0))
        res.memory_bytes = int(final.get("bytes", 0))
        step("transfer")
        src.transfer(mid, destination=dst_node.agent_url, token=dst_node.token())
        step("restore")  # post-copy: the point of no return
        dst.restore(mid)
        step("verify")
        v = dst.verify(mid)
        deadline = time.monotonic() + 60
        while post_copy and not v.get("ok") and time.monotonic() < deadline:
            time.sleep(0.1)  # past the commit point: wait for the pod (memory arriving)
            v = dst.verify(mid)
        if not v.get("ok") or v.get("state_sha256") != final.get("state_sha256"):
            raise LabError(f"verification failed: {v.get('reason') or 'state differs'}")
        res.freeze_s = round(time.monotonic() - freeze_start, 4)
        res.counter = v.get("counter")
        step("commit")
        src.commit(mid)
        dst.commit(mid)
        step("done")
    except (AgentClientError, LabError) as exc:
        res.error = str(exc)
        res.error_code = exc.code if isinstance(exc, AgentError) else ""
        if res.reached == "commit" or (post_copy and res.reached in ("restore", "verify")):
            raise  # past the commit point: never roll back
        if freeze_start:
            res.freeze_s = round(time.monotonic() - freeze_start, 4)
        dst.rollback(mid)
        src.rollback(mid)
        res.rolled_back = True
        step("rolled_back")
    res.ok = not res.error
    res.total_s = round(time.monotonic() - started, 4)
    return res
