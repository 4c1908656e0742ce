"""The controller's event log: one line per event, text for people or JSON lines.

Why not `logging` formatters: every line is an event with fields (`pod=`, `kind=`,
`result=`), and `--json` must give exactly those fields as one JSON object a line, for
log pipelines; a tiny writer keeps both forms identical in content.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

import orjson


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _text(v: Any) -> str:
    s = v if isinstance(v, str) else orjson.dumps(v).decode()
    if s and all(c.isalnum() or c in "-_./:@,+=" for c in s):
        return s
    return orjson.dumps(s).decode()


class EventLog:
    def __init__(self, stream: TextIO | None = None, *, as_json: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.as_json = as_json
        self._lock = threading.RLock()  # reentrant: the signal handler logs too

    def __call__(self, event: str, level: str = "info", **fields: Any) -> None:
        now = time.time()
        if self.as_json:
            line = orjson.dumps({"ts": _stamp(now), "level": level, "event": event,
                                 **fields}, default=str).decode()
        else:
            parts = [_stamp(now), level, event,
                     *(f"{k}={_text(v)}" for k, v in fields.items() if v is not None)]
            line = " ".join(parts)
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed log pipe must not stop the controller
