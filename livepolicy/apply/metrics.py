"""Apply metrics as a Prometheus textfile (`apply --metrics-file PATH`).

Why a sink: the engine already tells everything worth counting as events (docs/events.md),
so the metrics are one more consumer of that stream and cannot disagree with `--json` or
the report. Why a textfile: an apply is a short job, not a server to scrape; node_exporter's
textfile collector (or any agent that reads the format) picks the file up, and it is
written once at the end of the run, atomically (a temporary file in the same directory,
fsynced, then renamed over the old one), so a reader never sees half a file.

The values are those of the last apply (the file is replaced by each run): migrations by
final result, each migrated pod's freeze and whole duration as histograms, the run's
total duration, label changes, and when it ended.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from livepolicy.apply.events import Event

NS = "livepolicy_apply"
RESULTS = ("migrated", "rolled_back", "failed", "skipped", "deferred")
#: A freeze is what a user of the pod notices: fine steps below a second, then coarse.
FREEZE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class MetricsSink:
    """Collects the metrics from the events; writes `path` when the run's last event
    (`change_summary`) arrives."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock, self._wall = clock, wall
        self._started: float | None = None
        self._lock = threading.Lock()
        r = self.registry = CollectorRegistry()
        self.migrations = Counter(f"{NS}_migrations", "Migrations of the last apply by "
                                  "final result (migrated, rolled_back, failed, skipped, "
                                  "deferred).", ["result"], registry=r)
        for result in RESULTS:
            self.migrations.labels(result)  # every result shown, 0 included
        self.freeze = Histogram(f"{NS}_freeze_seconds", "Freeze of each migrated pod "
                                "(from checkpoint to running on the destination).",
                                registry=r, buckets=FREEZE_BUCKETS)
        self.migration_duration = Histogram(f"{NS}_migration_duration_seconds", "Whole "
                                            "duration of each migrated pod's migration.",
                                            registry=r, buckets=DURATION_BUCKETS)
        self.duration = Gauge(f"{NS}_duration_seconds", "Total duration of the last apply "
                              "(first event to the summary).", registry=r)
        self.labels = Gauge(f"{NS}_label_changes", "Pod label changes the last apply "
                            "wrote.", registry=r)
        self.simulated = Gauge(f"{NS}_simulated", "1 when the last apply was a simulation "
                               "(--agents sim).", registry=r)
        self.finished = Gauge(f"{NS}_last_run_timestamp_seconds", "Unix time the last apply "
                              "ended.", registry=r)
        self.written = False
        self.error = ""

    def emit(self, event: Event) -> None:
        with self._lock:
            if self._started is None:
                self._started = self._clock()
            kind = event.get("type")
            if kind == "apply_complete":
                self.freeze.observe(int(event.get("freeze_ms", 0)) / 1000)
                self.migration_duration.observe(int(event.get("duration_ms", 0)) / 1000)
            elif kind == "change_summary" and event.get("operation") == "apply":
                for result in RESULTS:
                    self.migrations.labels(result).inc(int(event["changes"].get(result, 0)))
                self.labels.set(int(event.get("labels", 0)))
                self.simulated.set(1 if event.get("simulated") else 0)
                self.duration.set(self._clock() - self._started)
                self.finished.set(self._wall())
                try:
                    self.write()
                except OSError as exc:
                    # The migrations are done and journaled: a metrics file that cannot be
                    # written is said (located, on stderr), never a traceback that hides
                    # the run's own summary.
                    self.error = f"{self.path}: cannot write the metrics file: {exc}"
                    print(f"warning: {self.error}", file=sys.stderr)

    def write(self) -> None:
        """Replace `path` with the current metrics, atomically."""
        data = generate_latest(self.registry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                   dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # readable by the textfile collector, as a plain file
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.written = True
