"""The fact model: plain frozen dataclasses, resolved once, shared by every later stage.

Everything a rule needs is precomputed here (owner chain resolved to its top controller,
volume zones, effective requests, node architecture and generation set), so rules stay
one-line predicates and the planner never re-parses raw Kubernetes objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import cached_property
from typing import Any, TypeVar

from livepolicy.core.selectors import NodeSelectorTerms, Selector

_T = TypeVar("_T")


class OwnerKind(StrEnum):
    """The controller that ultimately owns a pod, after following ReplicaSet and Job owners."""

    DEPLOYMENT = "Deployment"
    REPLICASET = "ReplicaSet"
    STATEFULSET = "StatefulSet"
    DAEMONSET = "DaemonSet"
    JOB = "Job"
    CRONJOB = "CronJob"
    BARE = "Pod"
    NODE = "Node"  # static (mirror) pods
    CUSTOM = "Custom"


class VolumeKind(StrEnum):
    PVC = "persistentVolumeClaim"
    EBS = "awsElasticBlockStore"
    NFS = "nfs"
    HOSTPATH = "hostPath"
    EMPTYDIR = "emptyDir"
    CONFIGMAP = "configMap"
    SECRET = "secret"
    PROJECTED = "projected"
    DOWNWARD_API = "downwardAPI"
    EPHEMERAL = "ephemeral"
    LOCAL = "local"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str  # NoSchedule | PreferNoSchedule | NoExecute


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    operator: str  # Equal | Exists
    value: str
    effect: str  # "" means all effects

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


@dataclass(frozen=True, slots=True)
class VolumeFacts:
    """One pod volume, with the zone it is pinned to when it is zonal block storage."""

    name: str
    kind: VolumeKind
    claim: str = ""  # PVC name for PVC volumes
    volume: str = ""  # PV name or EBS volume id
    zone: str = ""  # "" when not zonal or unknown
    bound: bool = True  # False for a PVC that is missing or not bound to a PV
    driver: str = ""  # CSI driver or in-tree plugin behind a PVC
    backend: VolumeKind | None = None  # what the PV behind a claim really is (EBS, NFS, ...)


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    name: str
    tty: bool = False
    stdin: bool = False
    extended_resources: Mapping[str, int] = field(default_factory=dict)  # e.g. nvidia.com/gpu
    privileged: bool = False


@dataclass(frozen=True, slots=True)
class SubnetFacts:
    id: str
    zone: str = ""
    cidr: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What kubectl cannot show: platform, version, region, subnets (ClusterInfo object)."""

    name: str = ""
    platform: str = "unknown"  # eks | gke | aks | kind | unknown ...
    kubernetes_version: str = ""
    region: str = ""
    subnets: tuple[SubnetFacts, ...] = ()
    network_mode: str = ""  # "" = derive from ENIConfigs; else standard | custom
    prefix_delegation: bool = False
    observed_at: str = ""  # RFC 3339 time the facts were read; "now" for age-based policies


@dataclass(frozen=True, slots=True)
class NodeFacts:
    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False
    ready: bool = True
    created: str = ""  # RFC 3339 creationTimestamp
    cpu_millis: int = 0  # allocatable
    memory_bytes: int = 0
    pods: int = 110
    architecture: str = ""
    zone: str = ""
    region: str = ""
    instance_type: str = ""
    family: str = ""
    generation_set: str = ""
    image_family: str = ""
    os_image: str = ""
    runtime: str = ""  # e.g. containerd
    runtime_version: str = ""  # e.g. 2.0.5
    kernel: str = ""
    network_mode: str = "standard"  # standard | custom (pod subnets from ENIConfig)
    eniconfig: str = ""
    provider_id: str = ""


@dataclass(frozen=True, slots=True)
class PodFacts:
    namespace: str
    name: str
    uid: str
    node: str
    phase: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    owner_kind: OwnerKind
    owner_name: str  # top-level controller name ("" for bare pods)
    owner_api: str = ""  # apiVersion/kind of an unknown controller, for messages
    containers: tuple[ContainerFacts, ...] = ()
    init_containers: int = 0
    volumes: tuple[VolumeFacts, ...] = ()
    cpu_millis: int = 0  # effective requests, like the scheduler computes them
    memory_bytes: int = 0
    memory_limit_bytes: int = 0
    memory_usage_bytes: int = 0  # observed working set if a source knows it, else 0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: NodeSelectorTerms = field(default_factory=NodeSelectorTerms)
    tolerations: tuple[Toleration, ...] = ()
    priority: int = 0
    priority_class: str = ""
    host_network: bool = False
    ordinal: int = -1  # StatefulSet ordinal, -1 otherwise
    deleting: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def workload(self) -> str:
        """Identity of the owning workload, used for per-workload budgets."""
        if self.owner_kind is OwnerKind.BARE:
            return f"{self.namespace}/Pod/{self.name}"
        return f"{self.namespace}/{self.owner_kind.value}/{self.owner_name}"

    @property
    def migration_memory_bytes(self) -> int:
        """Memory to move: observed usage when known, else limit, else request."""
        return self.memory_usage_bytes or self.memory_limit_bytes or self.memory_bytes


@dataclass(frozen=True, slots=True)
class PdbFacts:
    namespace: str
    name: str
    selector: Selector
    disruptions_allowed: int | None  # from status when present
    min_available: str = ""
    max_unavailable: str = ""


@dataclass(frozen=True)
class ClusterFacts:
    """The whole cluster, immutable. Index lookups are built lazily and cached."""

    info: ClusterInfo
    nodes: tuple[NodeFacts, ...]
    pods: tuple[PodFacts, ...]
    pdbs: tuple[PdbFacts, ...] = ()
    eniconfigs: tuple[str, ...] = ()
    workload_replicas: Mapping[str, int] = field(default_factory=dict)
    source: str = ""

    @cached_property
    def node_by_name(self) -> dict[str, NodeFacts]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def pod_by_key(self) -> dict[str, PodFacts]:
        return {p.key: p for p in self.pods}

    @cached_property
    def memo(self) -> dict[str, dict[Any, Any]]:
        """Scratch caches for derived lookups (the facts themselves never change)."""
        return {}

    @cached_property
    def pdbs_by_namespace(self) -> dict[str, list[PdbFacts]]:
        out: dict[str, list[PdbFacts]] = {}
        for d in self.pdbs:
            out.setdefault(d.namespace, []).append(d)
        return out

    @cached_property
    def pods_by_node(self) -> dict[str, list[PodFacts]]:
        out: dict[str, list[PodFacts]] = {n.name: [] for n in self.nodes}
        for p in self.pods:
            if p.node:
                out.setdefault(p.node, []).append(p)
        return out


def positional_constructor(cls: type[_T]) -> Callable[..., _T]:
    """`cls(*every_field)` for a frozen slots dataclass, several times faster: the generated
    `__init__` goes through `object.__setattr__` per field; this sets the slots directly,
    in straight-line code generated as dataclasses generate theirs. For hot paths that
    build one object per pod (no defaults, no validation)."""
    names = [f"v{i}" for i in range(len(fields(cls)))]  # type: ignore[arg-type]
    env: dict[str, Any] = {"new": object.__new__, "cls": cls}
    env.update({f"put{i}": getattr(cls, f.name).__set__
                for i, f in enumerate(fields(cls))})  # type: ignore[arg-type]
    body = "".join(f"    put{i}(obj, v{i})\n" for i in range(len(names)))
    exec(f"def make({', '.join(names)}):\n    obj = new(cls)\n{body}    return obj\n", env)
    make: Callable[..., _T] = env["make"]
    return make


make_pod = positional_constructor(PodFacts)  # every field, in order


make_volume = positional_constructor(VolumeFacts)  # every field, in order
