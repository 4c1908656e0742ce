"""Machine-readable apply events, modelled on Terraform's `-json` UI stream.

Every event has `@level`, `@message`, `@timestamp` and `type`. Sinks turn them into JSON
lines, a rich progress display, or a list (tests, reports).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from livepolicy import __version__

Event = dict[str, Any]


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


def make_event(type_: str, message: str, level: str = "info", **data: Any) -> Event:
    return {"@level": level, "@message": message,
            "@timestamp": datetime.now(UTC).isoformat(timespec="microseconds"),
            "type": type_, **data}


def version_event() -> Event:
    return make_event("version", f"livepolicy {__version__}", livepolicy=__version__, ui="1.0")


class JsonLinesSink:
    """One JSON document per line; flushed per event so a pipe sees progress live."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.stream.write(json.dumps(event, sort_keys=True) + "\n")
            self.stream.flush()


class ListSink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)


class TeeSink:
    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    def emit(self, event: Event) -> None:
        for s in self.sinks:
            s.emit(event)


class CallbackSink:
    def __init__(self, fn: Callable[[Event], None]) -> None:
        self.fn = fn

    def emit(self, event: Event) -> None:
        self.fn(event)


SIMULATED = "[simulated] "


class SimulatedSink:
    """`apply --agents sim`: every event says so (`simulated: true`, and a message that
    starts with "[simulated] "), so no line of a simulation reads like a real move."""

    def __init__(self, inner: EventSink) -> None:
        self.inner = inner

    def emit(self, event: Event) -> None:
        self.inner.emit({**event, "@message": SIMULATED + str(event["@message"]),
                         "simulated": True})
