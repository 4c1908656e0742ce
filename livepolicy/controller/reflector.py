"""Keep one `Store` in step with the API: list, then watch from the list's resourceVersion.

The client-go reflector loop, in a thread per kind:

- **list** (paginated, consistent) and `replace` the store; then **watch** from the
  list's resourceVersion with bookmarks, so the version to resume from stays fresh even
  when nothing of this kind changes;
- a stream that ends at its `timeoutSeconds` is watched again from the last version;
- `410 Gone` (etcd compacted the version, as after a long disconnection) means events
  were lost: **relist**, then watch again;
- a dropped connection or any other error waits a jittered exponential backoff
  (0.5 s doubling to 30 s) and watches again from the last version (relisting only if
  that one has expired meanwhile);
- every `resync` seconds the kind is relisted regardless, a safety net that also picks
  up an optional CRD (ENIConfig) installed after the start.

`on_change(kind, reason)` is called whenever the store's contents changed, and
`on_restart(kind, reason)` / `on_list(kind, reason)` feed the metrics.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from livepolicy.controller.cache import Store
from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import Resource
from livepolicy.kube.watch import Watch, WatchExpired

Notify = Callable[[str, str], None]


def _ignore(kind: str, reason: str) -> None:
    pass


class Backoff:
    """Jittered exponential backoff: 0.5, 1, 2, ... 30 s; `reset()` after a success."""

    def __init__(self, first: float = 0.5, cap: float = 30.0,
                 rand: Callable[[], float] = random.random) -> None:
        self.first, self.cap, self.rand = first, cap, rand
        self.failures = 0

    def next(self) -> float:
        base: float = min(self.cap, self.first * 2.0 ** self.failures)
        self.failures += 1
        return base * (0.8 + 0.4 * self.rand())

    def reset(self) -> None:
        self.failures = 0


class Reflector:
    def __init__(self, client: KubeClient, res: Resource, store: Store, *,
                 namespace: str | None = None, field_selector: str = "",
                 optional: bool = False, resync: float = 300.0,
                 watch_timeout: tuple[int, int] = (240, 480),
                 on_change: Notify = _ignore, on_restart: Notify = _ignore,
                 on_list: Notify = _ignore, on_error: Callable[[str, str], None] = _ignore,
                 backoff: Backoff | None = None) -> None:
        self.client = client
        self.res = res
        self.store = store
        self.namespace = namespace
        self.field_selector = field_selector
        self.optional = optional
        self.resync = resync
        self.watch_timeout = watch_timeout
        self.on_change, self.on_restart, self.on_list = on_change, on_restart, on_list
        self.on_error = on_error
        self.backoff = backoff or Backoff()
        self.lists = 0
        self.restarts: dict[str, int] = {}
        self.last_error = ""
        self._stop = threading.Event()
        self._watch: Watch | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        return self.res.kind

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, daemon=True,
                                        name=f"watch-{self.res.plural}")
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            w = self._watch
        if w is not None:
            w.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        reason = "initial"
        last_list = 0.0
        while not self._stop.is_set():
            try:
                if reason:
                    self._relist(reason)
                    last_list = time.monotonic()
                    reason = ""
                remaining = self.resync - (time.monotonic() - last_list)
                if remaining <= 0:
                    reason = "resync"
                    continue
                if not self.store.resource_version:  # optional kind absent: just wait
                    self._stop.wait(remaining)
                    reason = "resync"
                    continue
                self._watch_once(max(1, min(int(remaining) + 1,
                                            random.randint(*self.watch_timeout))))
                self.backoff.reset()
            except WatchExpired:
                self._count_restart("expired")
                reason = "expired"
            except KubeError as exc:
                self._count_restart("error")
                self.last_error = exc.message
                self.on_error(self.kind, exc.message)
                self._stop.wait(self.backoff.next())
            except Exception as exc:  # a bug must not kill the cache: log, back off, go on
                self._count_restart("error")
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.on_error(self.kind, self.last_error)
                self._stop.wait(self.backoff.next())
                reason = "error"

    def _count_restart(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1
        self.on_restart(self.kind, reason)

    def _relist(self, reason: str) -> None:
        try:
            got = self.client.list(self.res, namespace=self.namespace,
                                   field_selector=self.field_selector)
            items: list[dict[str, Any]] = got.items
            rv = got.resource_version
        except KubeError as exc:
            if not (exc.not_found and self.optional):
                raise
            items, rv = [], ""  # the CRD is not installed: none of these objects
        diff = self.store.replace(items, rv)
        self.lists += 1
        self.on_list(self.kind, reason)
        if diff.changed or reason == "initial":
            self.on_change(self.kind, f"relist:{reason}")

    def _watch_once(self, timeout: int) -> None:
        w = Watch(self.client, self.res, self.store.resource_version,
                  namespace=self.namespace, field_selector=self.field_selector,
                  timeout_seconds=timeout)
        with self._lock:
            self._watch = w
        if self._stop.is_set():
            return
        try:
            for event in w:
                if self.store.apply(event):
                    self.on_change(self.kind, event.type)
                if self._stop.is_set():
                    return
        finally:
            with self._lock:
                self._watch = None
        if not self._stop.is_set():
            self._count_restart("timeout")
