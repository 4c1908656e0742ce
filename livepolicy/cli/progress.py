"""Terminal progress for apply: one bar per running migration (with its phase) + overall."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from livepolicy.cli.common import new_console

_PHASE_STEP = {"preparing": 1, "checkpointing": 2, "transferring": 3, "restoring": 4,
               "verifying": 5, "committing": 6}
_STEPS = 7


class RichProgressSink:
    def __init__(self, total: int, console: Console | None = None, *,
                 prefix: str = "") -> None:
        self.console = console or new_console(stderr=True)
        self.prefix = prefix  # "[simulated] " for sim agents: on the bars as on the lines
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[phase]}"), TimeElapsedColumn(),
                                 console=self.console, transient=False)
        self.overall = self.progress.add_task(f"[bold]{escape(prefix)}apply",
                                              total=max(total, 1), phase="")
        self.tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgressSink:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def emit(self, event: dict[str, Any]) -> None:
        m = event.get("migration")
        kind = event["type"]
        with self._lock:
            if not m:
                if kind == "change_summary":
                    self.console.print(f"[bold]{escape(event['@message'])}")
                elif kind == "cluster_write" or event.get("@level") in ("warn", "error"):
                    style = {"error": "red", "warn": "yellow"}.get(event["@level"])
                    self.console.print(escape(event["@message"]), style=style)
                return
            mid = m["id"]
            if kind == "apply_start" and mid not in self.tasks:
                self.tasks[mid] = self.progress.add_task(escape(f"{self.prefix}{m['pod']} -> "
                                                                f"{m['to']}"),
                                                         total=_STEPS, phase="starting")
            task = self.tasks.get(mid)
            if kind == "apply_progress" and task is not None:
                phase = event.get("phase", "")
                self.progress.update(task, completed=_PHASE_STEP.get(phase, 0), phase=phase)
            elif kind in ("apply_complete", "apply_errored", "apply_skipped"):
                if task is not None:
                    self.progress.remove_task(task)
                    del self.tasks[mid]
                style = {"migrated": "green", "rolled_back": "yellow"}.get(
                    event.get("outcome", ""), "red")
                self.console.print(f"[{style}]{escape(event['@message'])}")
                if not event.get("retry"):  # a retried migration ends later
                    self.progress.advance(self.overall)
