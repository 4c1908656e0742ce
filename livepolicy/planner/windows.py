"""Maintenance windows: is a policy's window open at a given instant, and when next?

A window opens at each cron fire time (in its time zone) and stays open for its duration.
No windows means "any time".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from livepolicy.core.quantity import parse_duration_ms


def _spec(w: Mapping[str, Any]) -> tuple[str, int, ZoneInfo]:
    return (str(w["schedule"]), parse_duration_ms(str(w["duration"])),
            ZoneInfo(str(w.get("timeZone") or w.get("time_zone") or "UTC")))


def window_open(windows: Sequence[Mapping[str, Any]], now: datetime) -> bool:
    if not windows:
        return True
    for w in windows:
        schedule, duration_ms, tz = _spec(w)
        local = now.astimezone(tz)
        # croniter's get_prev is exclusive of `now`; step one second ahead to include it.
        start: datetime = croniter(schedule, local + timedelta(seconds=1)).get_prev(datetime)
        if local < start + timedelta(milliseconds=duration_ms):
            return True
    return False


def next_opening(windows: Sequence[Mapping[str, Any]], now: datetime) -> datetime | None:
    """When the next window opens (None when a window is open now or there are none)."""
    if window_open(windows, now):
        return None
    starts = []
    for w in windows:
        schedule, _, tz = _spec(w)
        starts.append(croniter(schedule, now.astimezone(tz)).get_next(datetime))
    return min(starts)
