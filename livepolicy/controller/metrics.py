"""Prometheus metrics and the health endpoints of the controller, over plain HTTP.

Why a registry per controller: tests run several controllers in one process, and the
global default registry would mix their counters. The server is the standard library's
threading HTTP server: `/metrics` (Prometheus text format), `/healthz` (the process and
its loop are alive) and `/readyz` (caches synced and a valid policy set loaded); both
health answers list their checks, one per line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

NS = "livepolicy_controller"
#: One check: (name, ok, detail).
Check = tuple[str, bool, str]


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.reconciles = Counter(f"{NS}_reconciles", "Assessments run, by result "
                                  "(ok: every write succeeded; error: some failed or the "
                                  "assessment raised).", ["result"], registry=r)
        self.label_writes = Counter(f"{NS}_label_writes", "Label writes by action "
                                    "(add, remove) and result (applied, would-apply, "
                                    "not-needed, gone, failed).", ["action", "result"],
                                    registry=r)
        self.conflicts = Counter(f"{NS}_label_conflicts", "resourceVersion conflicts met "
                                 "while writing labels (each re-read and re-planned).",
                                 registry=r)
        self.watch_restarts = Counter(f"{NS}_watch_restarts", "Watches started again, by "
                                      "kind and reason (expired: 410 Gone, relisted; error: "
                                      "dropped or failed, after a backoff; timeout: the "
                                      "server ended the stream).", ["kind", "reason"],
                                      registry=r)
        self.relists = Counter(f"{NS}_relists", "Full lists by kind and reason (initial, "
                               "expired, resync, error).", ["kind", "reason"], registry=r)
        self.is_leader = Gauge(f"{NS}_is_leader", "1 while this replica holds the Lease "
                               "and may write.", registry=r)
        self.last_success = Gauge(f"{NS}_last_success_timestamp_seconds", "Unix time of "
                                  "the last assessment whose writes all succeeded.",
                                  registry=r)
        self.duration = Histogram(f"{NS}_assessment_duration_seconds", "Time of one "
                                  "assessment: facts, plan and writes.", registry=r,
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.eligible = Gauge(f"{NS}_eligible_pods", "Pods that carry (or are being given) "
                              "the migration-enabled label after the last assessment.",
                              registry=r)
        self.pods = Gauge(f"{NS}_pods", "Pods in the last assessment.", registry=r)
        self.policy_errors = Counter(f"{NS}_policy_load_errors", "Policy loads that failed "
                                     "validation (the last good set was kept).", registry=r)
        self.policies_valid = Gauge(f"{NS}_policies_valid", "1 when the latest policy "
                                    "files are valid, 0 while the last good set is used.",
                                    registry=r)
        self.cache_objects = Gauge(f"{NS}_cache_objects", "Objects cached, by kind.",
                                   ["kind"], registry=r)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition the scraper asked for (`Accept`: OpenMetrics or text 0.0.4 /
        1.0.0), and its content type."""
        encoder, ctype = choose_encoder(accept)
        return bytes(encoder(self.registry)), ctype


class HealthServer:
    """`/metrics`, `/healthz`, `/readyz` on `host:port` (port 0: any free port)."""

    def __init__(self, host: str, port: int, metrics: Metrics,
                 healthz: Callable[[], list[Check]], readyz: Callable[[], list[Check]]
                 ) -> None:
        self.metrics = metrics
        routes: dict[str, Callable[[], list[Check]]] = {"/healthz": healthz,
                                                        "/readyz": readyz}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, *metrics.render(self.headers.get("Accept", "")))
                elif path in routes:
                    checks = routes[path]()
                    ok = all(c[1] for c in checks)
                    body = "".join(f"[{'+' if c[1] else '-'}]{c[0]} {c[2]}\n"
                                   for c in checks)
                    body += f"{path[1:]} {'ok' if ok else 'failed'}\n"
                    self._send(200 if ok else 503, body.encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n",
                               "text/plain; charset=utf-8")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the event log

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        name="health-http")
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
