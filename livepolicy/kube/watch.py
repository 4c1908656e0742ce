"""The watch primitive: one `?watch=1` stream of a resource, as parsed events.

Why here: a watch is a long-lived GET whose body is one JSON object per line; it must go
through the same configuration, credentials and connection pool as every other call
(`KubeClient.stream`), and only this package may touch the HTTP layer of the client.
What to do with the events (caches, relists after `410 Gone`, backoff) is the caller's
business (`livepolicy.controller.reflector`); this module only says what happened:

- each line becomes a `WatchEvent` (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`);
- an `ERROR` event carrying a 410 Status, or a 410 answer to the request itself, raises
  `WatchExpired`: the resourceVersion is too old (etcd compacted it), so relist;
- a dropped connection or a malformed line raises `KubeError` (status 0): watch again
  from the last resourceVersion seen, after a backoff;
- the server closing the stream at `timeoutSeconds` simply ends the iteration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import urllib3

from livepolicy.kube.client import KubeClient, normalise
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import Resource

EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})
_READ_MARGIN = 30.0  # seconds beyond timeoutSeconds before a silent stream counts as dead


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str((self.object.get("metadata") or {}).get("resourceVersion", ""))


class WatchExpired(KubeError):
    """The watch's resourceVersion is gone from etcd (410): list again, then watch."""


class Watch:
    """One watch request; iterate it for events, `close()` it from any thread to stop."""

    def __init__(self, client: KubeClient, res: Resource, resource_version: str, *,
                 namespace: str | None = None, field_selector: str = "",
                 label_selector: str = "", timeout_seconds: int = 300,
                 bookmarks: bool = True) -> None:
        self.client = client
        self.res = res
        self.resource_version = resource_version
        self.namespace = namespace
        self.query: list[tuple[str, str | int]] = [
            ("watch", 1), ("resourceVersion", resource_version),
            ("timeoutSeconds", int(timeout_seconds))]
        if bookmarks:
            self.query.append(("allowWatchBookmarks", "true"))
        if field_selector:
            self.query.append(("fieldSelector", field_selector))
        if label_selector:
            self.query.append(("labelSelector", label_selector))
        self.read_timeout = timeout_seconds + _READ_MARGIN
        self._resp: Any = None
        self._closed = threading.Event()
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        return self.res.path(self.namespace)

    def close(self) -> None:
        """Stop the stream: a blocked read in another thread returns at once."""
        self._closed.set()
        with self._lock:
            resp = self._resp
        if resp is not None:
            _shutdown(resp)

    def __iter__(self) -> Iterator[WatchEvent]:
        if self._closed.is_set():
            return
        try:
            resp = self.client.stream(self.path, query=self.query,
                                      read_timeout=self.read_timeout)
        except KubeError as exc:
            if exc.gone:
                raise WatchExpired(exc.message, 410, exc.reason, "GET", self.path,
                                   exc.server) from None
            raise
        with self._lock:
            self._resp = resp
        if self._closed.is_set():
            _shutdown(resp)
        try:
            yield from self._events(resp)
        finally:
            with self._lock:
                self._resp = None
            resp.release_conn()

    def _events(self, resp: Any) -> Iterator[WatchEvent]:
        buf = b""
        try:
            for chunk in resp.stream(65536, decode_content=True):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield self.parse(line)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if self._closed.is_set():
                return
            raise KubeError(f"the watch of {self.res.plural} at {self.client.target.server} "
                            f"was cut: {type(exc).__name__}: {exc}", 0, "", "GET",
                            self.path, self.client.target.server) from None
        if buf.strip() and not self._closed.is_set():
            yield self.parse(buf)

    def parse(self, line: bytes) -> WatchEvent:
        """One line of the stream as an event; ERROR events raise."""
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise KubeError(f"the watch of {self.res.plural} sent invalid JSON: {exc}", 0, "",
                            "GET", self.path, self.client.target.server) from None
        kind = str(doc.get("type", "")) if isinstance(doc, dict) else ""
        obj = doc.get("object") if isinstance(doc, dict) else None
        if not isinstance(obj, dict):
            obj = {}
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            msg = (f"the watch of {self.res.plural} ended: {obj.get('reason', '')} "
                   f"{obj.get('message', '')}".strip())
            cls = WatchExpired if code == 410 else KubeError
            raise cls(msg, code, str(obj.get("reason", "")), "GET", self.path,
                      self.client.target.server)
        if kind not in EVENT_TYPES:
            raise KubeError(f"the watch of {self.res.plural} sent an unknown event type "
                            f"{kind!r}", 0, "", "GET", self.path, self.client.target.server)
        if kind != "BOOKMARK":
            normalise(obj, self.res)
        return WatchEvent(kind, obj)


def _shutdown(resp: Any) -> None:
    """Close the socket under a response so a reader blocked in recv() wakes up."""
    shutdown = getattr(resp, "shutdown", None)  # urllib3 >= 2.3
    try:
        if shutdown is not None:
            shutdown()
        else:  # pragma: no cover - older urllib3
            resp.close()
    except (OSError, ValueError, urllib3.exceptions.HTTPError):
        pass  # ValueError: urllib3 has no socket to shut (the stream already ended)
