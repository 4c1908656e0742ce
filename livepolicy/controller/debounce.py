"""Coalesce bursts of changes into one assessment.

Why: a rollout changes hundreds of pods within seconds, and each assessment plans the
whole cluster. An assessment runs once the changes have been quiet for `quiet` seconds,
but never later than `max_delay` after the first change of a burst, so a cluster that
never stops changing is still assessed. Pure: the caller passes the time.
"""

from __future__ import annotations


class Debouncer:
    def __init__(self, quiet: float = 0.5, max_delay: float = 5.0) -> None:
        self.quiet = quiet
        self.max_delay = max(quiet, max_delay)
        self.first: float | None = None  # first change of the pending burst
        self.last: float | None = None  # latest change
        self.not_before: float | None = None  # a retry asked for at this time
        self.reasons: set[str] = set()

    @property
    def pending(self) -> bool:
        return self.first is not None or self.not_before is not None

    def poke(self, now: float, reason: str = "change") -> None:
        """A change happened now."""
        if self.first is None:
            self.first = now
        self.last = now
        self.reasons.add(reason)

    def poke_at(self, when: float, reason: str = "retry") -> None:
        """Assess again at `when` at the latest (a retry after failed writes)."""
        if self.not_before is None or when < self.not_before:
            self.not_before = when
        self.reasons.add(reason)

    def due_at(self) -> float | None:
        """When the pending assessment should run (None: nothing pending)."""
        times = []
        if self.first is not None and self.last is not None:
            times.append(min(self.last + self.quiet, self.first + self.max_delay))
        if self.not_before is not None:
            times.append(self.not_before)
        return min(times) if times else None

    def take(self, now: float) -> set[str] | None:
        """The reasons of a due assessment (and forget them), or None if none is due."""
        due = self.due_at()
        if due is None or now < due:
            return None
        reasons = self.reasons or {"change"}
        self.first = self.last = self.not_before = None
        self.reasons = set()
        return reasons
