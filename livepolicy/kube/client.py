"""A thin adapter over the official `kubernetes` client: configuration and raw JSON calls.

Why raw JSON: the client's model deserialisation turns every object into Python classes,
which at 150,000 pods costs more than the API calls themselves. Here every call goes
through the client's own configuration, authentication (tokens, exec plugins, client
certificates, in-cluster service account) and connection pool, but the body comes back
as bytes and is parsed with orjson into the plain dicts `kubectl get -o json` prints.

Lists are always paginated (`limit` + `continue`), and a list whose continue token
expired (`410 Gone`) is restarted from the beginning.

This package is the only place that imports `kubernetes` (an import-linter contract).
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from livepolicy.kube.errors import KubeConfigError, KubeError, explain
from livepolicy.kube.resources import Resource

DEFAULT_PAGE_SIZE = 500
FIELD_MANAGER = "livepolicy"
_LIST_RESTARTS = 5
_TIMEOUT = (10.0, 120.0)  # (connect, read) seconds
_IN_CLUSTER_HOST = "KUBERNETES_SERVICE_HOST"

Query = Sequence[tuple[str, str | int]]

# The client ships py.typed but leaves its configuration loaders unannotated.
_load_incluster: Callable[..., None] = k8s_config.load_incluster_config
_load_kubeconfig: Callable[..., None] = k8s_config.load_kube_config
_list_contexts: Callable[..., tuple[list[dict[str, Any]], dict[str, Any]]] = \
    k8s_config.list_kube_config_contexts


@dataclass
class Call:
    """A request about to be sent. Hooks see it first and may change its query or body
    (tests use them to race the adapter: edit an object between a read and a write,
    compact etcd between two pages)."""

    method: str
    path: str
    query: list[tuple[str, str | int]] = field(default_factory=list)
    body: Any = None


Hook = Callable[[Call], None]


@dataclass
class Stats:
    """Counters of one client, safe to update from several threads."""

    requests: int = 0
    pages: int = 0
    list_restarts: int = 0
    bytes: int = 0
    api_seconds: float = 0.0  # waiting for the server, body included
    parse_seconds: float = 0.0  # orjson
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, api: float, parse: float, size: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += size
            self.api_seconds += api
            self.parse_seconds += parse

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, float | int]:
        return {"requests": self.requests, "pages": self.pages,
                "list_restarts": self.list_restarts, "bytes": self.bytes,
                "api_seconds": round(self.api_seconds, 3),
                "parse_seconds": round(self.parse_seconds, 3)}


@dataclass
class ListResult:
    """Every item of one paginated list, as raw dicts, and how the list went."""

    items: list[dict[str, Any]]
    resource_version: str
    pages: int
    restarts: int


@dataclass(frozen=True)
class Target:
    """Which server, context and user a client talks to (for messages and ClusterInfo)."""

    server: str
    context: str = ""  # "" in-cluster
    cluster: str = ""  # the kubeconfig cluster name of the context
    user: str = ""
    in_cluster: bool = False


def _loopback(server: str) -> bool:
    host = urllib.parse.urlsplit(server).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_configuration(kubeconfig: str | None = None, context: str | None = None, *,
                       prefer_in_cluster: bool = False) -> tuple[Any, Target]:
    """The client configuration: --kubeconfig, else $KUBECONFIG / ~/.kube/config, else
    the in-cluster service account. Raises KubeConfigError with a clear message.

    `prefer_in_cluster` (the controller): with neither --kubeconfig nor --context, inside
    a pod, the service account wins over $KUBECONFIG and ~/.kube/config."""
    cfg = k8s_client.Configuration()
    in_pod = bool(os.environ.get(_IN_CLUSTER_HOST))
    skip_files = prefer_in_cluster and in_pod and not kubeconfig and not context
    path = "" if skip_files else (kubeconfig or os.environ.get("KUBECONFIG") or "")
    default = Path("~/.kube/config").expanduser()
    if not path and not skip_files and default.is_file():
        path = str(default)
    if not path:
        if os.environ.get(_IN_CLUSTER_HOST):
            if context:
                raise KubeConfigError("--context needs a kubeconfig, but none was found "
                                      "(running with the in-cluster service account)")
            try:
                _load_incluster(client_configuration=cfg)
            except ConfigException as exc:
                raise KubeConfigError(f"in-cluster configuration is unusable: {exc}") from None
            return cfg, Target(server=str(cfg.host), in_cluster=True,
                               user="in-cluster service account")
        raise KubeConfigError("no kubeconfig found: pass --kubeconfig FILE, set KUBECONFIG, "
                              "create ~/.kube/config, or run inside a pod")
    files = [p for p in path.split(os.pathsep) if p]
    missing = [p for p in files if not Path(p).expanduser().is_file()]
    if kubeconfig and missing:
        raise KubeConfigError(f"kubeconfig file not found: {', '.join(missing)}")
    if len(missing) == len(files):
        raise KubeConfigError(f"kubeconfig file not found: {path} (from KUBECONFIG)")
    try:
        contexts, current = _list_contexts(config_file=path)
        names = [str(c.get("name", "")) for c in contexts or []]
        if context and context not in names:
            raise KubeConfigError(f"context {context!r} is not in the kubeconfig {path} "
                                  f"(contexts: {', '.join(names) or 'none'})")
        if not context and not current:
            raise KubeConfigError(f"the kubeconfig {path} has no current-context; pass "
                                  f"--context (one of: {', '.join(names) or 'none'})")
        chosen = next((c for c in contexts or [] if c.get("name") == context), current or {})
        _load_kubeconfig(config_file=path, context=context, client_configuration=cfg,
                         persist_config=False)
    except KubeConfigError:
        raise
    except (ConfigException, OSError, ValueError, TypeError, KeyError,
            AttributeError) as exc:
        raise KubeConfigError(f"cannot use the kubeconfig {path}: {exc}") from None
    except Exception as exc:  # YAML errors and friends from the loader: never a traceback
        raise KubeConfigError(f"cannot read the kubeconfig {path}: {exc}") from None
    ctx = (chosen.get("context") or {}) if isinstance(chosen, dict) else {}
    return cfg, Target(server=str(cfg.host), context=str(chosen.get("name", "")),
                       cluster=str(ctx.get("cluster", "")), user=str(ctx.get("user", "")))


class KubeClient:
    """Raw-JSON calls to one API server. Thread-safe; create once, share, `close()`."""

    def __init__(self, api: Any, target: Target, *, page_size: int = DEFAULT_PAGE_SIZE,
                 timeout: tuple[float, float] = _TIMEOUT) -> None:
        self._api = api
        self.target = target
        self.page_size = page_size
        self.timeout = timeout
        self.stats = Stats()
        self.hooks: list[Hook] = []
        self._gzip = not _loopback(target.server)

    @classmethod
    def from_config(cls, kubeconfig: str | None = None, context: str | None = None, *,
                    page_size: int = DEFAULT_PAGE_SIZE, pool_size: int = 32,
                    prefer_in_cluster: bool = False) -> KubeClient:
        cfg, target = load_configuration(kubeconfig, context,
                                         prefer_in_cluster=prefer_in_cluster)
        cfg.connection_pool_maxsize = pool_size
        cfg.retries = 1  # connection errors fail fast; lists restart on their own
        return cls(k8s_client.ApiClient(cfg), target, page_size=page_size)

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one request primitive -------------------------------------------------------
    def request_raw(self, method: str, path: str, *, query: Query = (), body: Any = None,
                    content_type: str = "application/json") -> bytes:
        """Send one call; return the raw body of a 2xx answer, raise KubeError otherwise.

        The client's configuration supplies the URL, credentials (refreshed by its hook
        for exec plugins and expiring tokens), TLS and the connection pool; bodies go out
        as orjson bytes and come back unparsed.
        """
        t0 = time.perf_counter()
        resp = self._send(method, path, query, body, content_type, self.timeout[1])
        try:
            raw = resp.data
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc, method, path) from None
        self.stats.add(api=time.perf_counter() - t0, parse=0.0, size=len(raw))
        status = int(resp.status)
        if 200 <= status < 300:
            return bytes(raw)
        raise self._error(status, raw, method, path)

    def stream(self, path: str, *, query: Query = (), read_timeout: float) -> Any:
        """Open a long-lived GET (a watch) and return the unread urllib3 response of a
        2xx answer, raise KubeError otherwise. Same hooks, credentials and pool as
        `request_raw`; the caller reads it (`stream()`) and closes it."""
        resp = self._send("GET", path, query, None, "application/json", read_timeout)
        status = int(resp.status)
        if 200 <= status < 300:
            return resp
        try:
            raw = resp.data
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc, "GET", path) from None
        finally:
            resp.release_conn()
        raise self._error(status, raw, "GET", path)

    def _send(self, method: str, path: str, query: Query, body: Any, content_type: str,
              read_timeout: float) -> Any:
        call = Call(method, path, list(query), body)
        for hook in list(self.hooks):
            hook(call)
        query, body = call.query, call.body
        headers = {"Accept": "application/json"}
        if self._gzip:
            headers["Accept-Encoding"] = "gzip"
        try:
            m, url, hdrs, _, _ = self._api.param_serialize(
                method, path, query_params=list(query), header_params=headers,
                auth_settings=["BearerToken"])
            data = None
            if body is not None:
                hdrs["Content-Type"] = content_type
                data = orjson.dumps(body)
            return self._api.rest_client.pool_manager.request(
                m, url, body=data, headers=hdrs, preload_content=False,
                timeout=urllib3.Timeout(connect=self.timeout[0], read=read_timeout))
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc, method, path) from None
        except ConfigException as exc:  # token refresh (exec plugin, OIDC) failed
            raise KubeConfigError(f"cannot get credentials for {self.target.server}: {exc}",
                                  0, "", method, path, self.target.server) from None

    def _unreachable(self, exc: BaseException, method: str, path: str) -> KubeError:
        return KubeError(f"cannot reach the Kubernetes API at {self.target.server}: "
                         f"{_root_cause(exc)}", 0, "", method, path, self.target.server)

    def request(self, method: str, path: str, *, query: Query = (), body: Any = None,
                content_type: str = "application/json") -> Any:
        raw = self.request_raw(method, path, query=query, body=body, content_type=content_type)
        t0 = time.perf_counter()
        try:
            out = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise KubeError(f"the Kubernetes API at {self.target.server} sent invalid JSON "
                            f"for {method} {path}: {exc}", 0, "", method, path,
                            self.target.server) from None
        with self.stats._lock:
            self.stats.parse_seconds += time.perf_counter() - t0
        return out

    def _error(self, status: int, raw: bytes, method: str, path: str) -> KubeError:
        reason, message = "", ""
        try:
            doc = orjson.loads(raw)
            if isinstance(doc, dict):
                reason, message = str(doc.get("reason", "")), str(doc.get("message", ""))
        except orjson.JSONDecodeError:
            message = raw[:200].decode(errors="replace").strip()
        text = explain(status, reason, message, method, path, self.target.server,
                       self.target.user)
        cls = KubeConfigError if status == 401 else KubeError
        return cls(text, status, reason, method, path, self.target.server)

    # -- reads ---------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        out = self.request("GET", "/version")
        return out if isinstance(out, dict) else {}

    def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        out = self.request("GET", res.path(namespace, name))
        if not isinstance(out, dict):
            raise KubeError(f"unexpected answer to GET {res.path(namespace, name)}")
        return out

    def get_optional(self, res: Resource, name: str, namespace: str | None = None
                     ) -> dict[str, Any] | None:
        try:
            return self.get(res, name, namespace)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def pages(self, res: Resource, *, namespace: str | None = None, label_selector: str = "",
              field_selector: str = "", page_size: int | None = None
              ) -> Iterator[dict[str, Any]]:
        """Each page (a raw List document) of one paginated list, first to last.

        A 410 Gone on a continue token raises KubeError(410): callers that need a
        consistent whole restart (`list` does).
        """
        token = ""
        base: list[tuple[str, str | int]] = [("limit", page_size or self.page_size)]
        if label_selector:
            base.append(("labelSelector", label_selector))
        if field_selector:
            base.append(("fieldSelector", field_selector))
        while True:
            query = [*base, ("continue", token)] if token else base
            page = self.request("GET", res.path(namespace), query=query)
            if not isinstance(page, dict):
                raise KubeError(f"unexpected answer to GET {res.path(namespace)}")
            self.stats.count("pages")
            yield page
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    def list(self, res: Resource, *, namespace: str | None = None, label_selector: str = "",
             field_selector: str = "", page_size: int | None = None,
             on_page: Callable[[dict[str, Any]], None] | None = None) -> ListResult:
        """All items of a list, page by page; restarts when the continue token expired.

        Each item gets the `kind` and `apiVersion` that list items lack (as kubectl fills
        them in) and loses `metadata.managedFields` (bulky, never read).
        """
        for attempt in range(_LIST_RESTARTS + 1):
            items: list[dict[str, Any]] = []
            pages = 0
            rv = ""
            try:
                for page in self.pages(res, namespace=namespace, label_selector=label_selector,
                                       field_selector=field_selector, page_size=page_size):
                    pages += 1
                    rv = str((page.get("metadata") or {}).get("resourceVersion", ""))
                    batch = page.get("items") or []
                    for item in batch:
                        normalise(item, res)
                    items.extend(batch)
                    if on_page is not None:
                        on_page(page)
            except KubeError as exc:
                if exc.gone and pages and attempt < _LIST_RESTARTS:
                    self.stats.count("list_restarts")
                    continue
                raise
            return ListResult(items, rv, pages, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- writes --------------------------------------------------------------------------
    def create(self, res: Resource, obj: Mapping[str, Any], namespace: str | None = None, *,
               dry_run: bool = False, field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        out = self.request("POST", res.path(namespace), body=obj,
                           query=_write_query(dry_run, field_manager))
        return out if isinstance(out, dict) else {}

    def replace(self, res: Resource, obj: Mapping[str, Any], namespace: str | None = None, *,
                subresource: str = "", dry_run: bool = False,
                field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        name = str((obj.get("metadata") or {}).get("name", ""))
        path = res.path(namespace, name) + (f"/{subresource}" if subresource else "")
        out = self.request("PUT", path, body=obj, query=_write_query(dry_run, field_manager))
        return out if isinstance(out, dict) else {}

    def patch(self, res: Resource, name: str, patch: Any, namespace: str | None = None, *,
              patch_type: str = "merge", subresource: str = "", dry_run: bool = False,
              field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """`patch_type`: merge (RFC 7386), strategic, json (RFC 6902) or apply (server-side).

        A merge or strategic patch that carries `metadata.resourceVersion` is applied only
        if the object still has that version (else 409 Conflict).
        """
        types = {"merge": "application/merge-patch+json",
                 "strategic": "application/strategic-merge-patch+json",
                 "json": "application/json-patch+json",
                 "apply": "application/apply-patch+yaml"}
        path = res.path(namespace, name) + (f"/{subresource}" if subresource else "")
        query = _write_query(dry_run, field_manager)
        if patch_type == "apply":
            query.append(("force", "true"))
        out = self.request("PATCH", path, body=patch, query=query,
                           content_type=types[patch_type])
        return out if isinstance(out, dict) else {}

    def delete(self, res: Resource, name: str, namespace: str | None = None, *,
               resource_version: str = "", grace_period: int | None = None,
               dry_run: bool = False, propagation: str = "Background") -> None:
        """Delete one object (dependents in the background, as kubectl does)."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "propagationPolicy": propagation}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        if grace_period is not None:
            body["gracePeriodSeconds"] = grace_period
        if dry_run:
            body["dryRun"] = ["All"]
        self.request("DELETE", res.path(namespace, name), body=body)

    def delete_collection(self, res: Resource, namespace: str | None = None, *,
                          label_selector: str = "", grace_period: int | None = None,
                          propagation: str = "Background") -> None:
        query: list[tuple[str, str | int]] = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions",
                                "propagationPolicy": propagation}
        if grace_period is not None:
            body["gracePeriodSeconds"] = grace_period
        self.request("DELETE", res.path(namespace), query=query, body=body)


def normalise(item: dict[str, Any], res: Resource) -> None:
    """Fill in kind/apiVersion and drop managedFields, in place (as kubectl prints items)."""
    item.setdefault("kind", res.kind)
    item.setdefault("apiVersion", res.api_version)
    meta = item.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)


def _write_query(dry_run: bool, field_manager: str) -> list[tuple[str, str | int]]:
    query: list[tuple[str, str | int]] = []
    if field_manager:
        query.append(("fieldManager", field_manager))
    if dry_run:
        query.append(("dryRun", "All"))
    return query


def _root_cause(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    while isinstance(reason, BaseException) and getattr(reason, "reason", None) is not None:
        reason = getattr(reason, "reason", None)
    text = str(reason or exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "connection timed out"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host name not known"
    return text
