"""Kubernetes API facts source (`--cluster kube`): the same facts as a snapshot, read live.

Every list is paginated (`limit`/`continue`, 500 objects a page), fetched as raw JSON and
handed to `build_facts` exactly as a snapshot file's items are, so `livepolicy snapshot`
followed by `plan --cluster FILE` and `plan --cluster kube` see the same cluster.

What kubectl cannot show comes from the API server and the nodes, and may be overridden
by the optional ConfigMap `kube-system/livepolicy-cluster-info` (docs/kubernetes.md):
platform (EKS when `/version` says `-eks-` or nodes have `aws://` provider IDs), Kubernetes
version (`/version`), region (node labels or provider IDs), subnets and networking (only
from the ConfigMap), `observedAt` (the time of the read).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.core.yamlsrc import gc_paused
from livepolicy.facts.kubeobjects import INFO_API, REGION_KEYS, ZONE_KEYS, build_facts
from livepolicy.facts.model import ClusterFacts
from livepolicy.kube.client import DEFAULT_PAGE_SIZE, KubeClient, ListResult
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import (
    CONFIGMAPS,
    NODES,
    OPTIONAL_RESOURCES,
    PODS,
    SNAPSHOT_RESOURCES,
    Resource,
)

SOURCE = "kube"
INFO_CONFIGMAP_NAMESPACE = "kube-system"
INFO_CONFIGMAP_NAME = "livepolicy-cluster-info"
INFO_WHERE = f"configmap {INFO_CONFIGMAP_NAMESPACE}/{INFO_CONFIGMAP_NAME}"
_AWS_ZONE = re.compile(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d+)[a-z]$")


@dataclass
class ReadReport:
    """How the last read went: per kind, objects and pages; time in each phase."""

    counts: dict[str, int] = field(default_factory=dict)
    pages: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    list_seconds: float = 0.0  # wall time of all API reads (they run concurrently)
    build_seconds: float = 0.0  # build_facts


class KubeSource:
    """`FactsSource` reading a live cluster through the Kubernetes API."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, *,
                 client: KubeClient | None = None, page_size: int = DEFAULT_PAGE_SIZE,
                 parallelism: int = 4, clock: Callable[[], float] = time.time) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.page_size = page_size
        self.parallelism = max(1, parallelism)
        self._client = client
        self._clock = clock
        self.report = ReadReport()

    # -- the client ------------------------------------------------------------------------
    @property
    def client(self) -> KubeClient:
        if self._client is None:
            try:
                self._client = KubeClient.from_config(self.kubeconfig, self.context,
                                                      page_size=self.page_size)
            except KubeError as exc:
                raise exc.as_diagnostic_error(self._where) from None
        return self._client

    @property
    def _where(self) -> str:
        return f"kube (context {self.context})" if self.context else SOURCE

    # -- reading ---------------------------------------------------------------------------
    def read(self) -> ClusterFacts:
        return self.facts_of(self.read_objects())

    def snapshot(self) -> dict[str, Any]:
        """The snapshot document `livepolicy snapshot` prints: a v1 List."""
        return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                "items": self.read_objects()}

    def read_objects(self) -> list[dict[str, Any]]:
        """Every object a snapshot holds, ClusterInfo first, as raw dicts."""
        observed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))
        client = self.client
        report = ReadReport()
        t0 = time.perf_counter()
        try:
            with gc_paused(), ThreadPoolExecutor(self.parallelism,
                                                 thread_name_prefix="kube-list") as pool:
                lists = {res: pool.submit(self._list, res) for res in SNAPSHOT_RESOURCES}
                version = pool.submit(client.version)
                configmap = pool.submit(client.get_optional, CONFIGMAPS, INFO_CONFIGMAP_NAME,
                                        INFO_CONFIGMAP_NAMESPACE)
                results = {res: _result(f) for res, f in lists.items()}
                nodes = results[NODES]
                if nodes is not None and _pods_on_unknown_nodes(results):
                    # A node registered between the node list and the pod list: read again.
                    results[NODES] = nodes = self._list(NODES)
                info = cluster_info(_result(version) or {}, (nodes.items if nodes else []),
                                    _result(configmap), client.target.cluster, observed)
        except KubeError as exc:
            raise exc.as_diagnostic_error(self._where) from None
        report.list_seconds = time.perf_counter() - t0
        items: list[dict[str, Any]] = [info]
        for res in SNAPSHOT_RESOURCES:
            got = results[res]
            report.counts[res.kind] = len(got.items) if got else 0
            report.pages[res.kind] = got.pages if got else 0
            report.restarts[res.kind] = got.restarts if got else 0
            if got:
                items.extend(got.items)
        self.report = report
        return items

    def _list(self, res: Resource) -> ListResult | None:
        try:
            return self.client.list(res, page_size=self.page_size)
        except KubeError as exc:
            if exc.not_found and res in OPTIONAL_RESOURCES:
                return None  # the CRD is not installed: no such objects
            raise

    def facts_of(self, items: list[dict[str, Any]]) -> ClusterFacts:
        """ClusterFacts of raw objects (as `read_objects` returns them)."""
        problems: list[tuple[str, str]] = []

        def report(pointer: str, message: str) -> None:
            problems.append((pointer, message))

        t0 = time.perf_counter()
        with gc_paused():
            facts = build_facts(items, report, base="/items", source=SOURCE)
        self.report.build_seconds = time.perf_counter() - t0
        if problems:
            diags = [_locate(items, p, m, self._where) for p, m in problems[:200]]
            if len(problems) > 200:
                diags.append(Diagnostic(self._where, f"... and {len(problems) - 200} more "
                                        "problems", None))
            raise DiagnosticError(diags)
        return facts


def _result(f: Future[Any]) -> Any:
    return f.result()


def _pods_on_unknown_nodes(results: Mapping[Resource, ListResult | None]) -> bool:
    nodes, pods = results.get(NODES), results.get(PODS)
    known = {str((n.get("metadata") or {}).get("name", "")) for n in (nodes.items if nodes
                                                                         else [])}
    known.add("")
    return any(str((p.get("spec") or {}).get("nodeName", "")) not in known
               for p in (pods.items if pods else []))


def _locate(items: list[dict[str, Any]], pointer: str, message: str, where: str
            ) -> Diagnostic:
    """Name the object a problem is in (a live cluster has no file lines to point at)."""
    parts = pointer.split("/", 3)  # "", "items", index, rest
    if len(parts) >= 3 and parts[1] == "items" and parts[2].isdigit():
        obj = items[int(parts[2])] if int(parts[2]) < len(items) else {}
        meta = obj.get("metadata") or {}
        name = f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") \
            else str(meta.get("name", "?"))
        origin = f" (from {INFO_WHERE})" if obj.get("kind") == "ClusterInfo" else ""
        rest = "/" + parts[3] if len(parts) > 3 else ""
        return Diagnostic(where, f"{obj.get('kind', 'object')} {name}{origin}: {message}",
                          rest)
    return Diagnostic(where, message, pointer)


# -- ClusterInfo ---------------------------------------------------------------------------
def cluster_info(version: Mapping[str, Any], nodes: list[dict[str, Any]],
                 configmap: Mapping[str, Any] | None, cluster_name: str, observed_at: str
                 ) -> dict[str, Any]:
    """The ClusterInfo object: inferred from the server and nodes, then overridden by the
    ConfigMap's `spec` (YAML) and `name`; `observedAt` is always the time of the read."""
    git = str(version.get("gitVersion", ""))
    spec: dict[str, Any] = {"platform": infer_platform(git, nodes),
                            "kubernetesVersion": git, "region": infer_region(nodes)}
    name = cluster_display_name(cluster_name)
    if configmap is not None:
        data = configmap.get("data") or {}
        override = _parse_override(str(data.get("spec", "") or ""))
        spec.update(override)
        name = str(data.get("name", "") or name)
    spec["observedAt"] = observed_at
    return {"apiVersion": INFO_API, "kind": "ClusterInfo", "metadata": {"name": name},
            "spec": spec}


def _parse_override(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        doc = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise DiagnosticError([Diagnostic(INFO_WHERE, f"data.spec is not valid YAML: {exc}",
                                          "/data/spec")]) from None
    if not isinstance(doc, dict):
        raise DiagnosticError([Diagnostic(INFO_WHERE, "data.spec must be a YAML mapping (the "
                                          "spec of a ClusterInfo object)", "/data/spec")])
    doc.pop("observedAt", None)  # always the time of the read
    return {str(k): v for k, v in doc.items()}


def _provider_schemes(nodes: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str((n.get("spec") or {}).get("providerID", "")).partition("://")[0]
                   for n in nodes if (n.get("spec") or {}).get("providerID"))


def infer_platform(git_version: str, nodes: list[dict[str, Any]]) -> str:
    schemes = _provider_schemes(nodes)
    top = schemes.most_common(1)[0][0] if schemes else ""
    if "-eks-" in git_version or top == "aws":
        return "eks"
    if "-gke." in git_version or top == "gce":
        return "gke"
    if top == "azure":
        return "aks"
    if top == "kind":
        return "kind"
    return "unknown"


def infer_region(nodes: list[dict[str, Any]]) -> str:
    """The most common region label of the nodes, else one derived from AWS zones."""
    regions: Counter[str] = Counter()
    zones: Counter[str] = Counter()
    for n in nodes:
        labels = (n.get("metadata") or {}).get("labels") or {}
        region = next((labels[k] for k in REGION_KEYS if k in labels), "")
        if region:
            regions[str(region)] += 1
            continue
        zone = next((labels[k] for k in ZONE_KEYS if k in labels), "")
        if not zone:  # aws:///us-east-1a/i-0123
            pid = str((n.get("spec") or {}).get("providerID", ""))
            if pid.startswith("aws://"):
                zone = pid.removeprefix("aws://").strip("/").split("/")[0]
        m = _AWS_ZONE.match(str(zone))
        if m:
            zones[m.group(1)] += 1
    best = regions or zones
    return min(best.items(), key=lambda kv: (-kv[1], kv[0]))[0] if best else ""


def cluster_display_name(cluster: str) -> str:
    """`arn:aws:eks:us-east-1:123456789012:cluster/shop-prod` -> `shop-prod`."""
    if cluster.startswith("arn:") and ":cluster/" in cluster:
        return cluster.rsplit("/", 1)[-1]
    return cluster
