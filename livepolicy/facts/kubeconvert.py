"""The Converter: one cluster's conversion state, its indexes, cluster info and nodes.

Split from kubeobjects so the indexes that pods refer to (owners, PVCs, PVs, ENIConfigs)
and the node conversion live beside the state they fill; per-pod code is in kubepods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from livepolicy.core.catalog import family_of, generation_set
from livepolicy.core.selectors import NodeSelectorTerms, Selector
from livepolicy.facts.kubepods import PodConverter, _SpecShape
from livepolicy.facts.kubevalues import (
    REGION_KEYS,
    ZONE_KEYS,
    Report,
    _first,
    _list,
    _map,
    _str_map,
    image_family,
)
from livepolicy.facts.model import (
    ClusterInfo,
    ContainerFacts,
    NodeFacts,
    OwnerKind,
    PdbFacts,
    SubnetFacts,
    Taint,
    Toleration,
    VolumeKind,
)


@dataclass
class Converter(PodConverter):
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
