"""What a parent process needs to start an agent: wait for its one-line readiness report.

An agent started with `--port 0` prints `{"event": "listening", "port": ...}` once it
serves. Launchers (the sim pool for `apply --agents sim`, the lab) read that line, with a
timeout so an agent that hangs at start-up cannot hang its parent.
"""

from __future__ import annotations

import json
import subprocess
import threading
from typing import Any


def await_listening(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any] | None:
    """The agent's readiness report, or None when it exited (or was killed at the timeout)."""
    assert proc.stdout is not None
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        line = proc.stdout.readline()
    finally:
        timer.cancel()
    if not line:
        return None
    info: dict[str, Any] = json.loads(line)
    return info
