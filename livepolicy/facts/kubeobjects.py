"""Turn raw Kubernetes objects (dicts as kubectl or the API return them) into facts.

Shared by every source that sees Kubernetes objects (snapshot file, live API), so a
snapshot and a live read of the same cluster give the same facts. Problems are collected
with the JSON pointer of the offending field instead of raising on the first one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from sys import intern
from typing import Any, NamedTuple

import orjson

from livepolicy.core.catalog import family_of, generation_set
from livepolicy.core.quantity import bytes_of, cpu_millis
from livepolicy.core.selectors import NodeSelectorTerms, Requirement, Selector
from livepolicy.facts.model import (
    ClusterFacts,
    ClusterInfo,
    ContainerFacts,
    NodeFacts,
    OwnerKind,
    PdbFacts,
    PodFacts,
    SubnetFacts,
    Taint,
    Toleration,
    VolumeFacts,
    VolumeKind,
    make_pod,
    make_volume,
)

INFO_API = "livepolicy.io/v1alpha1"
ZONE_KEYS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone",
             "topology.ebs.csi.aws.com/zone")
REGION_KEYS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
_STD_RESOURCES = ("cpu", "memory", "ephemeral-storage", "pods")
KNOWN_KINDS = frozenset({
    "Node", "Pod", "PersistentVolumeClaim", "PersistentVolume", "PodDisruptionBudget",
    "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ENIConfig",
    "ClusterInfo",
})

Report = Callable[[str, str], None]  # (pointer, message)
_OWNER_KINDS = {"Deployment": OwnerKind.DEPLOYMENT, "ReplicaSet": OwnerKind.REPLICASET,
                "StatefulSet": OwnerKind.STATEFULSET, "DaemonSet": OwnerKind.DAEMONSET,
                "Job": OwnerKind.JOB, "CronJob": OwnerKind.CRONJOB, "Node": OwnerKind.NODE}
_BUILTIN_APIS = frozenset({"apps/v1", "batch/v1", "v1", "extensions/v1beta1", "batch/v1beta1"})
_BARE_OWNER = (OwnerKind.BARE, "", "")
# Volume sources that need no lookup, in the order they are recognised.
_SIMPLE_VOLUMES = {"awsElasticBlockStore": VolumeKind.EBS, "nfs": VolumeKind.NFS,
                   "hostPath": VolumeKind.HOSTPATH, "emptyDir": VolumeKind.EMPTYDIR,
                   "configMap": VolumeKind.CONFIGMAP, "secret": VolumeKind.SECRET,
                   "projected": VolumeKind.PROJECTED, "downwardAPI": VolumeKind.DOWNWARD_API,
                   "ephemeral": VolumeKind.EPHEMERAL}


_EMPTY: dict[str, Any] = {}  # shared, never mutated: saves an allocation per missing field
_NO_ANNOTATIONS: dict[str, str] = {}  # likewise for the pods without livepolicy annotations


def _map(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else _EMPTY


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _str_map(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        return {}
    if all(type(x) is str for x in v.values()):  # the usual case: keep the parsed dict
        return v
    return {str(k): str(x) for k, x in v.items()}


@lru_cache(maxsize=8192)
def _cpu_cached(v: str) -> int:
    return cpu_millis(v)


@lru_cache(maxsize=8192)
def _mem_cached(v: str) -> int:
    return bytes_of(v)


def _first(labels: Mapping[str, str], keys: tuple[str, ...]) -> str:
    for k in keys:
        if k in labels:
            return labels[k]
    return ""


def image_family(os_image: str, labels: Mapping[str, str]) -> str:
    """Node image family in the FAMILY_* vocabulary, from an explicit label or the OS image."""
    explicit = labels.get("livepolicy.io/image-family") or labels.get("cast.ai/image-family")
    if explicit:
        return explicit
    text = os_image.lower()
    if text.startswith("amazon linux 2023"):
        return "FAMILY_AL2023"
    if text.startswith("amazon linux 2"):
        return "FAMILY_AL2"
    if "bottlerocket" in text:
        return "FAMILY_BOTTLEROCKET"
    if "ubuntu" in text:
        return "FAMILY_UBUNTU"
    return "FAMILY_OTHER" if text else ""


class _SpecShape(NamedTuple):
    cpu: int
    mem: int
    limit: int
    containers: tuple[ContainerFacts, ...]
    node_selector: dict[str, str]
    tolerations: tuple[Toleration, ...]
    priority: int
    priority_class: str
    host_network: bool


@dataclass
class Converter:
    """Stateful conversion of one cluster's objects; `report` collects located problems."""

    report: Report
    info: ClusterInfo = field(default_factory=ClusterInfo)
    eniconfigs: set[str] = field(default_factory=set)
    _owners: dict[tuple[str, str, str], tuple[str, str, str]] = field(default_factory=dict)
    _pvc: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # -> (pv, phase)
    _pv: dict[str, tuple[VolumeKind, str, str]] = field(default_factory=dict)  # kind,zone,drv
    _shapes: dict[bytes, _SpecShape] = field(default_factory=dict)
    _affinities: dict[bytes, NodeSelectorTerms] = field(default_factory=dict)
    _cfacts: dict[bytes, tuple[ContainerFacts, ...]] = field(default_factory=dict)
    _tols: dict[bytes, tuple[Toleration, ...]] = field(default_factory=dict)
    _owner_memo: dict[tuple[str, str, str, str], tuple[OwnerKind, str, str]] = field(
        default_factory=dict)
    problems: int = 0

    def __post_init__(self) -> None:
        inner = self.report

        def counting(pointer: str, message: str) -> None:
            self.problems += 1
            inner(pointer, message)
        self.report = counting

    def _tolerations(self, raw: Any) -> tuple[Toleration, ...]:
        if not raw:
            return ()
        key = orjson.dumps(raw)
        found = self._tols.get(key)
        if found is None:
            found = self._tols[key] = tuple(_toleration(_map(t)) for t in _list(raw))
        return found

    def _affinity(self, raw: Any) -> NodeSelectorTerms:
        """Required node affinity, shared by the pods that spell it the same way (a
        DaemonSet's pods pin one node each, so there are about as many as nodes)."""
        if not isinstance(raw, dict) or "nodeAffinity" not in raw:
            return _NO_AFFINITY
        try:
            key = orjson.dumps(raw["nodeAffinity"], option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            return _node_affinity(raw)
        found = self._affinities.get(key)
        if found is None:
            found = self._affinities[key] = _node_affinity(raw)
        return found

    # -- quantities -----------------------------------------------------------------------
    def _cpu(self, v: Any, ptr: str | Callable[[], str]) -> int:
        """CPU in millicores; `ptr` may be a callable so hot paths build it only on error."""
        try:
            return _cpu_cached(v) if isinstance(v, str) else cpu_millis(v)
        except (ValueError, TypeError):
            self.report(ptr if isinstance(ptr, str) else ptr(), f"invalid CPU quantity {v!r}")
            return 0

    def _mem(self, v: Any, ptr: str | Callable[[], str]) -> int:
        try:
            return _mem_cached(v) if isinstance(v, str) else bytes_of(v)
        except (ValueError, TypeError):
            self.report(ptr if isinstance(ptr, str) else ptr(),
                        f"invalid memory quantity {v!r}")
            return 0

    # -- index objects that pods refer to ---------------------------------------------------
    def index_owner(self, obj: Mapping[str, Any]) -> None:
        """Remember each ReplicaSet/Job's own controller so pods can be resolved to the top."""
        meta = _map(obj.get("metadata"))
        key = (str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name", "")))
        for ref in _list(meta.get("ownerReferences")):
            if isinstance(ref, dict) and ref.get("controller"):
                self._owners[key] = (str(ref.get("kind", "")), str(ref.get("name", "")),
                                     str(ref.get("apiVersion", "")))
                return
        self._owners.setdefault(key, ("", "", ""))

    def index_pvc(self, obj: Mapping[str, Any]) -> None:
        meta = _map(obj.get("metadata"))
        spec = _map(obj.get("spec"))
        status = _map(obj.get("status"))
        self._pvc[(str(meta.get("namespace", "")), str(meta.get("name", "")))] = (
            str(spec.get("volumeName", "")), str(status.get("phase", "")))

    def index_pv(self, obj: Mapping[str, Any]) -> None:
        meta = _map(obj.get("metadata"))
        spec = _map(obj.get("spec"))
        labels = _str_map(meta.get("labels"))
        zone = _first(labels, ZONE_KEYS)
        for term in _list(_map(_map(_map(spec.get("nodeAffinity")).get("required")))
                          .get("nodeSelectorTerms")):
            for expr in _list(_map(term).get("matchExpressions")):
                e = _map(expr)
                values = _list(e.get("values"))
                if e.get("key") in ZONE_KEYS and e.get("operator") == "In" and values:
                    zone = zone or str(values[0])
        csi = _map(spec.get("csi"))
        driver = str(csi.get("driver", ""))
        if driver == "ebs.csi.aws.com" or "awsElasticBlockStore" in spec:
            kind = VolumeKind.EBS
        elif driver == "efs.csi.aws.com" or "nfs" in spec:
            kind = VolumeKind.NFS
        elif "hostPath" in spec:
            kind = VolumeKind.HOSTPATH
        elif "local" in spec:
            kind = VolumeKind.LOCAL
        else:
            kind = VolumeKind.OTHER
        self._pv[str(meta.get("name", ""))] = (kind, zone, driver or kind.value)

    def index_eniconfig(self, obj: Mapping[str, Any]) -> None:
        self.eniconfigs.add(str(_map(obj.get("metadata")).get("name", "")))

    def set_info(self, obj: Mapping[str, Any], ptr: str) -> None:
        spec = _map(obj.get("spec"))
        subnets = []
        for i, s in enumerate(_list(spec.get("subnets"))):
            if not isinstance(s, dict) or not s.get("id"):
                self.report(f"{ptr}/spec/subnets/{i}", "subnet needs an 'id'")
                continue
            subnets.append(SubnetFacts(str(s["id"]), str(s.get("zone", "")),
                                       str(s.get("cidr", "")), _str_map(s.get("tags"))))
        net = _map(spec.get("networking"))
        mode = str(net.get("mode", ""))
        if mode not in ("", "standard", "custom"):
            self.report(f"{ptr}/spec/networking/mode", f"unknown networking mode {mode!r}; "
                        "expected standard or custom")
            mode = ""
        platform = str(spec.get("platform", "unknown")).lower()
        version = spec.get("kubernetesVersion", "")
        if not isinstance(version, str):
            self.report(f"{ptr}/spec/kubernetesVersion", f"kubernetesVersion must be a "
                        f"string such as \"v1.31.2\" (got {version!r}; quote it in YAML)")
            version = ""
        prefix = net.get("prefixDelegation", False)
        if not isinstance(prefix, bool):
            self.report(f"{ptr}/spec/networking/prefixDelegation",
                        f"prefixDelegation must be true or false (got {prefix!r})")
            prefix = False
        self.info = ClusterInfo(
            name=str(_map(obj.get("metadata")).get("name", "")), platform=platform,
            kubernetes_version=version,
            region=str(spec.get("region", "")), subnets=tuple(subnets), network_mode=mode,
            prefix_delegation=prefix,
            observed_at=str(spec.get("observedAt", "")))

    # -- nodes --------------------------------------------------------------------------------
    def node(self, obj: Mapping[str, Any], ptr: str) -> NodeFacts | None:
        meta = _map(obj.get("metadata"))
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            self.report(f"{ptr}/metadata/name", "node has no name")
            return None
        labels = _str_map(meta.get("labels"))
        spec = _map(obj.get("spec"))
        status = _map(obj.get("status"))
        alloc = _map(status.get("allocatable")) or _map(status.get("capacity"))
        info = _map(status.get("nodeInfo"))
        taints = []
        for raw in _list(spec.get("taints")):
            t = _map(raw)
            taints.append(Taint(str(t.get("key", "")), str(t.get("value", "")),
                                str(t.get("effect", ""))))
        ready = any(_map(c).get("type") == "Ready" and _map(c).get("status") == "True"
                    for c in _list(status.get("conditions"))) or not status.get("conditions")
        runtime, _, version = str(info.get("containerRuntimeVersion", "")).partition("://")
        itype = labels.get("node.kubernetes.io/instance-type") or labels.get(
            "beta.kubernetes.io/instance-type", "")
        zone = _first(labels, ZONE_KEYS)
        eni = labels.get("k8s.amazonaws.com/eniConfig", "")
        mode = self.info.network_mode
        if not mode:
            custom = (eni and eni in self.eniconfigs) or (zone and zone in self.eniconfigs)
            mode = "custom" if custom else "standard"
        pods_raw = alloc.get("pods", 110)
        try:
            pods = int(str(pods_raw))
        except ValueError:
            self.report(f"{ptr}/status/allocatable/pods", f"invalid pod count {pods_raw!r}")
            pods = 0
        family = family_of(itype) if itype else ""
        os_image = str(info.get("osImage", ""))
        return NodeFacts(
            name=name, labels=labels, taints=tuple(taints),
            unschedulable=bool(spec.get("unschedulable", False)), ready=ready,
            created=str(meta.get("creationTimestamp", "")),
            cpu_millis=self._cpu(alloc.get("cpu", 0), f"{ptr}/status/allocatable/cpu"),
            memory_bytes=self._mem(alloc.get("memory", 0), f"{ptr}/status/allocatable/memory"),
            pods=pods,
            architecture=labels.get("kubernetes.io/arch") or str(info.get("architecture", "")),
            zone=zone, region=_first(labels, REGION_KEYS) or self.info.region,
            instance_type=itype, family=family,
            generation_set=(generation_set(family) or "") if family else "",
            image_family=image_family(os_image, labels), os_image=os_image,
            runtime=runtime if version else "", runtime_version=version,
            kernel=str(info.get("kernelVersion", "")), network_mode=mode, eniconfig=eni,
            provider_id=str(spec.get("providerID", "")))

    # -- pods ---------------------------------------------------------------------------------
    def _resolve_owner(self, ns: str, meta: Mapping[str, Any]) -> tuple[OwnerKind, str, str]:
        refs = meta.get("ownerReferences")
        if not isinstance(refs, list):
            return _BARE_OWNER
        for ref in refs:
            if isinstance(ref, dict) and ref.get("controller"):
                break
        else:
            return _BARE_OWNER
        key = (ns, str(ref.get("kind", "")), str(ref.get("name", "")),
               str(ref.get("apiVersion", "")))
        found = self._owner_memo.get(key)  # replicas share their controller
        if found is None:
            found = self._owner_memo[key] = self._owner_chain(*key)
        return found

    def _owner_chain(self, ns: str, kind: str, name: str, api: str
                     ) -> tuple[OwnerKind, str, str]:
        for _ in range(4):  # ReplicaSet -> Deployment, Job -> CronJob; bounded, cycle-safe
            parent = self._owners.get((kind, ns, name))
            if not parent or not parent[0]:
                break
            kind, name, api = parent
        if kind in _OWNER_KINDS and api in _BUILTIN_APIS:
            return _OWNER_KINDS[kind], name, ""
        return OwnerKind.CUSTOM, name, f"{api}/{kind}" if api else kind

    def _volume(self, ns: str, v: Mapping[str, Any]) -> VolumeFacts:
        if len(v) == 2 and "name" in v:  # the usual shape: a name and one source
            name = v["name"]
            name = name if type(name) is str else str(name)
            first, second = v
            kind = _SIMPLE_VOLUMES.get(second if first == "name" else first)
            if kind is not None and kind is not VolumeKind.EBS:
                return _simple_volume(name, kind)
        else:
            name = str(v.get("name", ""))
        if "persistentVolumeClaim" in v:
            claim = str(_map(v["persistentVolumeClaim"]).get("claimName", ""))
            pv, phase = self._pvc.get((ns, claim), ("", ""))
            if not pv or pv not in self._pv:
                return make_volume(name, VolumeKind.PVC, claim, pv, "", False, "", None)
            kind, zone, driver = self._pv[pv]
            return make_volume(name, VolumeKind.PVC, claim, pv, zone, phase in ("Bound", ""),
                               driver, kind)
        for key, kind in _SIMPLE_VOLUMES.items():  # the first source in this order wins
            if key in v:
                if kind is VolumeKind.EBS:
                    return VolumeFacts(name, kind, volume=str(_map(v[key]).get("volumeID", "")))
                return _simple_volume(name, kind)
        return VolumeFacts(name, VolumeKind.OTHER, driver=next(
            (k for k in v if k != "name"), ""))

    def _requests(self, containers: list[Any], ptr: str) -> tuple[int, int, int, list[
            dict[str, int]]]:
        cpu = mem = limit = 0
        extended: list[dict[str, int]] = []
        for i, c in enumerate(containers):
            res = _map(_map(c).get("resources"))
            req, lim = _map(res.get("requests")), _map(res.get("limits"))

            def at(field: str, i: int = i) -> Callable[[], str]:
                return lambda: f"{ptr}/{i}/resources/{field}"
            c_cpu = req.get("cpu", lim.get("cpu"))
            c_mem = req.get("memory", lim.get("memory"))
            if c_cpu is not None:
                cpu += self._cpu(c_cpu, at("requests/cpu"))
            if c_mem is not None:
                mem += self._mem(c_mem, at("requests/memory"))
            if "memory" in lim:
                limit += self._mem(lim["memory"], at("limits/memory"))
            ext: dict[str, int] = {}
            if len(lim) + len(req) > 4 or any(k not in _STD_RESOURCES for k in (*lim, *req)):
                for src in (lim, req):
                    for k, q in src.items():
                        if k not in _STD_RESOURCES and not k.startswith("hugepages-"):
                            try:
                                ext[k] = max(ext.get(k, 0), int(str(q)))
                            except ValueError:
                                self.report(at(f"limits/{k}")(),
                                            f"invalid count {q!r} for {k}")
            extended.append(ext)
        return cpu, mem, limit, extended

    def _spec_shape(self, spec: Mapping[str, Any], containers: list[Any], inits: list[Any],
                    ptr: str) -> _SpecShape:
        """What replicas share (requests, containers, scheduling constraints), derived once
        per distinct spec: keyed by the canonical bytes of the fields it reads; results
        with problems are never cached, so every faulty pod is reported."""
        try:
            key: bytes | None = orjson.dumps(
                [containers, inits, spec.get("overhead"), spec.get("tolerations"),
                 spec.get("nodeSelector"), spec.get("priority", 0),
                 spec.get("priorityClassName", ""), spec.get("hostNetwork", False)],
                option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError):  # e.g. YAML sets or non-string keys
            key = None
        found = self._shapes.get(key) if key is not None else None
        if found is not None:
            return found
        before = self.problems
        cpu, mem, limit, ext = self._requests(containers, f"{ptr}/spec/containers")
        for i, ic in enumerate(inits):  # each init container runs alone: take the max
            one_cpu, one_mem, _, _ = self._requests([ic], f"{ptr}/spec/initContainers/{i}")
            cpu, mem = max(cpu, one_cpu), max(mem, one_mem)
        cfacts = tuple(_container(_map(c), e) for c, e in zip(containers, ext, strict=True))
        # Shapes that differ elsewhere share equal containers (rules memoise on them).
        cfacts = self._cfacts.setdefault(orjson.dumps(cfacts), cfacts)
        overhead = spec.get("overhead")
        if overhead:
            overhead = _map(overhead)
            if "cpu" in overhead:
                cpu += self._cpu(overhead["cpu"], f"{ptr}/spec/overhead/cpu")
            if "memory" in overhead:
                mem += self._mem(overhead["memory"], f"{ptr}/spec/overhead/memory")
        priority = spec.get("priority", 0)
        found = _SpecShape(
            cpu, mem, limit, cfacts, _str_map(spec.get("nodeSelector")),
            self._tolerations(spec.get("tolerations")),
            priority if isinstance(priority, int) else 0, str(spec.get("priorityClassName", "")),
            bool(spec.get("hostNetwork", False)))
        if key is not None and self.problems == before:
            self._shapes[key] = found
        return found

    def pod(self, obj: Mapping[str, Any], ptr: str) -> PodFacts | None:
        # The hottest function at 150k pods: _map/_list are inlined.
        meta, spec, status = obj.get("metadata"), obj.get("spec"), obj.get("status")
        if not isinstance(meta, dict):
            meta = _EMPTY
        name, ns = meta.get("name"), meta.get("namespace", "default")
        if not isinstance(name, str) or not name:
            self.report(f"{ptr}/metadata/name", "pod has no name")
            return None
        # Namespace, node and phase repeat on thousands of pods: one string each (less memory,
        # and a forked child's share pickles them once).
        ns = intern(ns if type(ns) is str else str(ns))
        if not isinstance(spec, dict):
            spec = _EMPTY
        if not isinstance(status, dict):
            status = _EMPTY
        containers = spec.get("containers")
        if not isinstance(containers, list) or not containers:
            containers = []
            self.report(f"{ptr}/spec/containers", "pod has no containers")
        inits = spec.get("initContainers")
        if not isinstance(inits, list):
            inits = []
        shape = self._spec_shape(spec, containers, inits, ptr)
        owner_kind, owner_name, owner_api = self._resolve_owner(ns, meta)
        raw_ann = meta.get("annotations")
        # Only livepolicy's own annotations matter; keeping the rest costs memory at scale.
        annotations = {k: str(v) for k, v in raw_ann.items() if k.startswith("livepolicy.io/")} \
            if isinstance(raw_ann, dict) and raw_ann else _NO_ANNOTATIONS
        annotations = annotations or _NO_ANNOTATIONS  # one shared empty dict, never mutated
        usage = annotations.get("livepolicy.io/memory-usage")
        ordinal = -1
        if owner_kind is OwnerKind.STATEFULSET:
            suffix = name.rsplit("-", 1)[-1]
            ordinal = int(suffix) if suffix.isdigit() else -1
        raw_volumes = spec.get("volumes")
        return make_pod(  # every field, in PodFacts' order
            ns, name, str(meta.get("uid", "")), intern(str(spec.get("nodeName", ""))),
            intern(str(status.get("phase", "Unknown"))), _str_map(meta.get("labels")),
            annotations,
            owner_kind, owner_name, owner_api, shape.containers, len(inits),
            tuple([self._volume(ns, v if isinstance(v, dict) else _EMPTY) for v in raw_volumes])
            if isinstance(raw_volumes, list) else (),
            shape.cpu, shape.mem, shape.limit,
            self._mem(usage, f"{ptr}/metadata/annotations") if usage else 0,
            shape.node_selector, self._affinity(spec.get("affinity")), shape.tolerations,
            shape.priority,
            shape.priority_class, shape.host_network, ordinal,
            bool(meta.get("deletionTimestamp")))

    def pods(self, items: list[tuple[int, dict[str, Any]]], base: str) -> list[PodFacts]:
        """Convert pods in item order (problems are reported in that order too)."""
        return [p for i, o in items if (p := self.pod(o, f"{base}/{i}"))]

    def pdb(self, obj: Mapping[str, Any], ptr: str) -> PdbFacts | None:
        meta = _map(obj.get("metadata"))
        spec = _map(obj.get("spec"))
        status = _map(obj.get("status"))
        allowed = status.get("disruptionsAllowed")
        return PdbFacts(
            namespace=str(meta.get("namespace", "default")), name=str(meta.get("name", "")),
            selector=Selector.from_k8s(_map(spec.get("selector"))),
            disruptions_allowed=allowed if isinstance(allowed, int) else None,
            min_available=str(spec.get("minAvailable", "")),
            max_unavailable=str(spec.get("maxUnavailable", "")))


def _container(c: Mapping[str, Any], ext: dict[str, int]) -> ContainerFacts:
    sc = c.get("securityContext")
    return ContainerFacts(str(c.get("name", "")), tty=bool(c.get("tty", False)),
                          stdin=bool(c.get("stdin", False)), extended_resources=ext,
                          privileged=bool(_map(sc).get("privileged", False)) if sc else False)


_NO_AFFINITY = NodeSelectorTerms()


@lru_cache(maxsize=4096)
def _simple_volume(name: str, kind: VolumeKind) -> VolumeFacts:
    """Volumes like `config` repeat on many pods: share one frozen object."""
    return make_volume(name, kind, "", "", "", True, "", None)


_TOLERATIONS: dict[tuple[str, str, str, str], Toleration] = {}


def _toleration(t: Mapping[str, Any]) -> Toleration:
    key = (str(t.get("key", "")), str(t.get("operator", "Equal")), str(t.get("value", "")),
           str(t.get("effect", "")))
    found = _TOLERATIONS.get(key)
    if found is None:
        found = _TOLERATIONS[key] = Toleration(*key)
    return found


def _node_affinity(affinity: Mapping[str, Any]) -> NodeSelectorTerms:
    if not affinity or "nodeAffinity" not in affinity:
        return _NO_AFFINITY
    req = _map(_map(affinity.get("nodeAffinity")).get(
        "requiredDuringSchedulingIgnoredDuringExecution"))
    terms = []
    for term in _list(req.get("nodeSelectorTerms")):
        t = _map(term)

        def sel(key: str, t: Mapping[str, Any] = t) -> Selector:
            return Selector(tuple(
                Requirement(str(_map(e).get("key", "")), str(_map(e).get("operator", "")),
                            tuple(str(x) for x in _list(_map(e).get("values"))))
                for e in _list(t.get(key))))
        terms.append((sel("matchExpressions"), sel("matchFields")))
    return NodeSelectorTerms(tuple(terms))


def build_facts(items: list[Any], report: Report, base: str = "/items",
                source: str = "") -> ClusterFacts:
    """Convert a list of Kubernetes objects (any order) into ClusterFacts."""
    conv = Converter(report)
    by_kind: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i, obj in enumerate(items):
        ptr = f"{base}/{i}"
        if not isinstance(obj, dict):
            report(ptr, f"expected a Kubernetes object, got {type(obj).__name__}")
            continue
        kind = obj.get("kind")
        if not isinstance(kind, str):
            report(ptr, "object has no 'kind'")
            continue
        if kind not in KNOWN_KINDS:
            report(f"{ptr}/kind", f"unknown kind {kind!r} in snapshot (expected one of "
                   f"{', '.join(sorted(KNOWN_KINDS))})")
            continue
        by_kind.setdefault(kind, []).append((i, obj))
    for i, obj in by_kind.get("ClusterInfo", []):
        if obj.get("apiVersion") != INFO_API:
            report(f"{base}/{i}/apiVersion", f"ClusterInfo must have apiVersion {INFO_API!r}")
        conv.set_info(obj, f"{base}/{i}")
    for kind in ("ReplicaSet", "Job"):
        for _, obj in by_kind.get(kind, []):
            conv.index_owner(obj)
    for _, obj in by_kind.get("PersistentVolume", []):
        conv.index_pv(obj)
    for _, obj in by_kind.get("PersistentVolumeClaim", []):
        conv.index_pvc(obj)
    for _, obj in by_kind.get("ENIConfig", []):
        conv.index_eniconfig(obj)
    nodes = [n for i, o in by_kind.get("Node", []) if (n := conv.node(o, f"{base}/{i}"))]
    pods = conv.pods(by_kind.get("Pod", []), base)
    pdbs = [d for i, o in by_kind.get("PodDisruptionBudget", [])
            if (d := conv.pdb(o, f"{base}/{i}"))]
    _check_unique(nodes, pods, by_kind, base, report)
    replicas: dict[str, int] = {}
    for p in pods:
        w = p.workload
        replicas[w] = replicas.get(w, 0) + 1
    nodes.sort(key=lambda n: n.name)
    pods.sort(key=lambda p: (p.namespace, p.name))
    return ClusterFacts(info=conv.info, nodes=tuple(nodes), pods=tuple(pods),
                        pdbs=tuple(sorted(pdbs, key=lambda d: (d.namespace, d.name))),
                        eniconfigs=tuple(sorted(conv.eniconfigs)), workload_replicas=replicas,
                        source=source)


def _check_unique(nodes: list[NodeFacts], pods: list[PodFacts],
                  by_kind: dict[str, list[tuple[int, dict[str, Any]]]], base: str,
                  report: Report) -> None:
    seen: set[str] = set()
    for (i, _), n in zip(by_kind.get("Node", []), nodes, strict=False):
        if n.name in seen:
            report(f"{base}/{i}/metadata/name", f"duplicate node {n.name!r}")
        seen.add(n.name)
    known = seen
    seen = set()
    for (i, _), p in zip(by_kind.get("Pod", []), pods, strict=False):
        if p.key in seen:
            report(f"{base}/{i}/metadata/name", f"duplicate pod {p.key!r}")
        seen.add(p.key)
        if p.node and p.node not in known:
            report(f"{base}/{i}/spec/nodeName", f"pod {p.key} is bound to unknown node "
                   f"{p.node!r}")
