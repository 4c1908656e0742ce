"""Pod conversion: the hot path of a large plan, with its per-shape caches.

Split from the Converter so the code run once per pod (and the frozen pieces replicas
share) sits apart from the one-off indexes and node conversion. Converter mixes it in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from sys import intern
from typing import Any, NamedTuple

import orjson

from livepolicy.core.quantity import INT64, bytes_of, cpu_millis
from livepolicy.core.selectors import NodeSelectorTerms, Requirement, Selector
from livepolicy.facts.kubevalues import (
    _BARE_OWNER,
    _BUILTIN_APIS,
    _EMPTY,
    _NO_ANNOTATIONS,
    _OWNER_KINDS,
    _SIMPLE_VOLUMES,
    _STD_RESOURCES,
    Report,
    _cpu_cached,
    _list,
    _map,
    _mem_cached,
    _str_map,
)
from livepolicy.facts.model import (
    ContainerFacts,
    OwnerKind,
    PodFacts,
    Toleration,
    VolumeFacts,
    VolumeKind,
    make_pod,
    make_volume,
)


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


class PodConverter:
    """Per-pod conversion; the state it reads is declared (and filled) by Converter."""

    report: Report
    problems: int
    _owners: dict[tuple[str, str, str], tuple[str, str, str]]
    _pvc: dict[tuple[str, str], tuple[str, str]]
    _pv: dict[str, tuple[VolumeKind, str, str]]
    _shapes: dict[bytes, _SpecShape]
    _affinities: dict[bytes, NodeSelectorTerms]
    _cfacts: dict[bytes, tuple[ContainerFacts, ...]]
    _tols: dict[bytes, tuple[Toleration, ...]]
    _owner_memo: dict[tuple[str, str, str, str], tuple[OwnerKind, str, str]]

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
        found = self._derive_shape(spec, containers, inits, ptr)
        if key is not None and self.problems == before:
            self._shapes[key] = found
        return found

    def _derive_shape(self, spec: Mapping[str, Any], containers: list[Any], inits: list[Any],
                      ptr: str) -> _SpecShape:
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
        if max(cpu, mem, limit) >= INT64:
            self.report(f"{ptr}/spec/containers", "the containers' resources add up to more "
                        "than a Kubernetes quantity can hold")
        priority = spec.get("priority", 0)
        return _SpecShape(
            cpu, mem, limit, cfacts, _str_map(spec.get("nodeSelector")),
            self._tolerations(spec.get("tolerations")),
            priority if isinstance(priority, int) else 0, str(spec.get("priorityClassName", "")),
            bool(spec.get("hostNetwork", False)))

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
        raw_ann = meta.get("annotations")
        # Only livepolicy's own annotations matter; keeping the rest costs memory at scale.
        annotations = own_annotations(raw_ann) if isinstance(raw_ann, dict) and raw_ann \
            else _NO_ANNOTATIONS
        raw_volumes = spec.get("volumes")
        return self._finish(
            ns, name, str(meta.get("uid", "")), intern(str(spec.get("nodeName", ""))),
            intern(str(status.get("phase", "Unknown"))), _str_map(meta.get("labels")),
            annotations, self._resolve_owner(ns, meta), shape, len(inits),
            tuple([self._volume(ns, v if isinstance(v, dict) else _EMPTY) for v in raw_volumes])
            if isinstance(raw_volumes, list) else (),
            self._affinity(spec.get("affinity")), bool(meta.get("deletionTimestamp")), ptr)

    def _finish(self, ns: str, name: str, uid: str, node: str, phase: str,
                labels: dict[str, str], annotations: dict[str, str],
                owner: tuple[OwnerKind, str, str], shape: _SpecShape, inits: int,
                volumes: tuple[VolumeFacts, ...], affinity: NodeSelectorTerms, deleting: bool,
                ptr: str) -> PodFacts:
        """The PodFacts from its converted parts (shared by the dict and the typed paths)."""
        owner_kind, owner_name, owner_api = owner
        usage = annotations.get("livepolicy.io/memory-usage")
        ordinal = -1
        if owner_kind is OwnerKind.STATEFULSET:
            suffix = name.rsplit("-", 1)[-1]  # isdigit() alone takes "²" and 5,000 digits
            ordinal = int(suffix) if suffix.isascii() and suffix.isdigit() and \
                len(suffix) < 10 else -1
        return make_pod(  # every field, in PodFacts' order
            ns, name, uid, node, phase, labels, annotations,
            owner_kind, owner_name, owner_api, shape.containers, inits, volumes,
            shape.cpu, shape.mem, shape.limit,
            self._mem(usage, f"{ptr}/metadata/annotations") if usage else 0,
            shape.node_selector, affinity, shape.tolerations, shape.priority,
            shape.priority_class, shape.host_network, ordinal, deleting)

    def pods(self, items: list[tuple[int, dict[str, Any]]], base: str) -> list[PodFacts]:
        """Convert pods in item order (problems are reported in that order too)."""
        return [p for i, o in items if (p := self.pod(o, f"{base}/{i}"))]


def own_annotations(raw: Mapping[str, Any]) -> dict[str, str]:
    """livepolicy's own annotations (one shared empty dict, never mutated, when none)."""
    return {k: str(v) for k, v in raw.items() if k.startswith("livepolicy.io/")} \
        or _NO_ANNOTATIONS


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
