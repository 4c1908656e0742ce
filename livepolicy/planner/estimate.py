"""Duration and freeze-time model for one migration (documented in docs/estimates.md).

Pre-copy (Clark et al. 2005): round 0 sends all memory V; round i re-sends what was
dirtied meanwhile, V*(D/R)^i for dirty rate D and rate R. Rounds stop once the remainder
can be sent within the freeze budget, or after `maxRounds`; then the pod is frozen for the
last copy. arm64 lacks dirty-page tracking, so it always does one stop-and-copy of V.
Post-copy freezes only for process state and streams pages after.

Why the constants: they are fitted to the CRIU lab (`docs/benchmarks.md`, "Lab
migrations"; refitted 2026-12-02 once the dump and the page copy overlapped). Memory is
not moved at the link's rate but at what the agents sustain end to end (dump, seal, send,
unseal, write, restore), so R is the lower of the two.
"""

from __future__ import annotations

import math

from livepolicy.core.quantity import parse_bandwidth, parse_duration_ms
from livepolicy.facts.model import NodeFacts, PodFacts
from livepolicy.planner.model import Estimate
from livepolicy.policy.models import Strategy

FIXED_OVERHEAD_MS = 150  # dump bookkeeping + restore + network switch (small pod: 0.13-0.18 s)
PIPELINE_RATE = 4_000_000_000 // 8  # bytes/s the agents move end to end (lab: ~1.8 s per GiB)
POSTCOPY_STATE_MS = 150  # post-copy: state transfer and first faults, flat in memory (lab)
LAZY_RATE = 1_600_000_000 // 8  # bytes/s of the lazy page tail while the pod runs (lab)
DEFAULT_MEMORY = 128 * 2**20
GIB = 2**30


def resolve_transfer(strategy: Strategy, src: NodeFacts) -> tuple[str, str]:
    """Transfer mode actually used, plus a note when the policy's choice was adjusted."""
    wanted = strategy.memory_transfer
    iterative_ok = src.architecture != "arm64"
    if wanted == "auto":
        return ("iterative" if iterative_ok else "stop-and-copy"), ""
    if wanted == "iterative" and not iterative_ok:
        return "stop-and-copy", (f"{src.name} is arm64: iterative transfer unavailable, using "
                                 "one stop-and-copy")
    return wanted, ""


def memory_of(pod: PodFacts) -> tuple[int, str]:
    if pod.memory_usage_bytes:
        return pod.memory_usage_bytes, "usage"
    if pod.memory_limit_bytes:
        return pod.memory_limit_bytes, "limit"
    if pod.memory_bytes:
        return pod.memory_bytes, "request"
    return DEFAULT_MEMORY, "default"


def estimate(pod: PodFacts, transfer: str, strategy: Strategy) -> Estimate:
    mem, source = memory_of(pod)
    link = max(parse_bandwidth(strategy.bandwidth), 1)
    rate = min(link, PIPELINE_RATE)
    dirty = parse_bandwidth(strategy.dirty_rate)
    budget_ms = parse_duration_ms(strategy.freeze_budget)
    per_gib = parse_duration_ms(strategy.completion_timeout_per_gib)
    timeout = per_gib * max(1, math.ceil(mem / GIB))
    copy_ms = mem * 1000 // rate
    if transfer == "post-copy":
        return Estimate(mem, source, transfer, 1, mem, FIXED_OVERHEAD_MS + POSTCOPY_STATE_MS,
                        FIXED_OVERHEAD_MS + mem * 1000 // min(link, LAZY_RATE), timeout)
    if transfer == "stop-and-copy":
        return Estimate(mem, source, transfer, 1, mem, FIXED_OVERHEAD_MS + copy_ms,
                        FIXED_OVERHEAD_MS + copy_ms, timeout)
    remaining, sent, rounds, elapsed_ms = mem, 0, 0, 0
    while rounds < strategy.max_rounds:
        round_ms = remaining * 1000 // rate
        sent += remaining
        elapsed_ms += round_ms
        rounds += 1
        remaining = min(mem, dirty * round_ms // 1000)
        if remaining * 1000 // rate <= budget_ms or dirty >= rate:
            break
    final_ms = remaining * 1000 // rate
    return Estimate(mem, source, transfer, rounds + 1, sent + remaining,
                    FIXED_OVERHEAD_MS + final_ms, FIXED_OVERHEAD_MS + elapsed_ms + final_ms,
                    timeout)
