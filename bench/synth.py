"""Deterministic synthetic EKS cluster snapshots, shaped exactly like kubectl output.

Why this exists: livepolicy has to plan over Kubernetes' supported envelope (5,000 nodes,
150,000 pods), and its rules have to be exercised on clusters that nobody can check in.
Real snapshots are private and drift; a seeded generator gives every benchmark and test the
same cluster on every machine. The objects are the ones `kubectl get nodes,pods,... -A -o
yaml` prints (not livepolicy's facts), so a benchmark pays for the real parsing path, and
every field the parser reads sits where Kubernetes puts it.

Two layers:

* `ClusterBuilder` with `ContainerSpec`, `Workload` and the volume helpers: small
  factories that create pods from a workload's pod template the way controllers do, with
  the fields admission adds (service-account token volume, default tolerations, priority).
  `scripts/make-example.py` uses them to hand-shape `examples/cluster.yaml`.
* `generate()`: a random but seeded cluster of any size on top of the same factories.

Everything returned is plain dict/list/str/int/bool/None, so it goes straight to orjson.
Time is frozen at `NOW`, so outputs never depend on the wall clock.
"""

from __future__ import annotations

import argparse
import calendar
import gc
import ipaddress
import math
import random
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

JSON = dict[str, Any]

NOW = calendar.timegm((2025, 6, 2, 9, 30, 0))  # the instant every snapshot is "taken"
DAY = 86_400
REGION = "us-east-1"
KUBERNETES_VERSION = "v1.31.4-eks-2d5f260"
KUBELET_VERSION = "v1.31.4-eks-aeac579"
AL2023_IMAGE = "Amazon Linux 2023.6.20250115"
AL2_IMAGE = "Amazon Linux 2"
BOTTLEROCKET_IMAGE = "Bottlerocket OS 1.30.0 (aws-k8s-1.31)"
CONTAINERD = "containerd://2.0.5"
CONTAINERD_17 = "containerd://1.7.25"
CONTAINERD_BOTTLEROCKET = "containerd://2.0.5+bottlerocket"
ACCOUNT = "123456789012"
ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
MANAGED_BY = "provisioner.cast.ai/managed-by"
CUSTOM_NETWORK = "live.cast.ai/custom-network"
MIGRATION_ENABLED = "live.cast.ai/migration-enabled"
OPT_OUT = "autoscaling.cast.ai/live-migration-disabled"
REMOVAL_DISABLED = "autoscaling.cast.ai/removal-disabled"
DRAIN = "lifecycle.livepolicy.io/drain"
NFD_CPUID = "feature.node.kubernetes.io/cpu-cpuid."
ZONE_IDS = {"us-east-1a": "use1-az4", "us-east-1b": "use1-az6", "us-east-1c": "use1-az1",
            "us-east-1d": "use1-az2", "us-east-1e": "use1-az3", "us-east-1f": "use1-az5"}
_ALNUM = "bcdfghjklmnpqrstvwxz2456789"  # alphabet of Kubernetes' generated name suffixes

# CPU features as node-feature-discovery reports them. Two CPU models hide behind m5/c5/r5
# (Skylake without AVX512-VNNI, Cascade Lake with it): exactly the case where a restore on
# the "same" instance type dies with an illegal instruction.
SKYLAKE = ("ADX", "AESNI", "AVX", "AVX2", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512F",
           "AVX512VL", "FMA3", "MPX", "RDSEED")
CASCADE_LAKE = (*SKYLAKE, "AVX512VNNI")
ICE_LAKE = (*(f for f in CASCADE_LAKE if f != "MPX"), "AVX512BITALG", "AVX512IFMA",
            "AVX512VBMI", "AVX512VBMI2", "AVX512VPOPCNTDQ", "GFNI", "SHA", "VAES",
            "VPCLMULQDQ")  # Ice Lake dropped MPX
GRAVITON2 = ("AES", "ASIMD", "ASIMDDP", "ASIMDHP", "ASIMDRDM", "ATOMICS", "CPUID", "CRC32",
             "DCPOP", "FPHP", "LRCPC", "PMULL", "SHA1", "SHA2", "SSBS")
SAPPHIRE_RAPIDS = (*ICE_LAKE, "AMXBF16", "AMXINT8", "AMXTILE", "AVX512BF16", "AVX512FP16",
                   "AVXVNNI")
CPU_MODELS = {"skylake": ("Intel", "6", "85"), "cascadelake": ("Intel", "6", "85"),
              "icelake": ("Intel", "6", "106"), "sapphirerapids": ("Intel", "6", "143"),
              "graviton2": ("ARM", "0", "3340")}
_CPU_FEATURES = {"skylake": SKYLAKE, "cascadelake": CASCADE_LAKE, "icelake": ICE_LAKE,
                 "sapphirerapids": SAPPHIRE_RAPIDS, "graviton2": GRAVITON2}


def ts(epoch: int) -> str:
    """RFC 3339 in UTC, the only timestamp form kubectl prints."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class Ids:
    """Identifiers drawn from one seeded RNG, so a seed fixes every uid, name and AWS id."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._bits = rng.getrandbits

    def uid(self) -> str:
        h = f"{self._bits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def hex(self, n: int) -> str:
        return f"{self._bits(4 * n):0{n}x}"

    def suffix(self, n: int = 5) -> str:
        r = self._bits(5 * n)  # 32 values per draw for 27 letters: a slight, harmless skew
        out = []
        for _ in range(n):
            r, d = divmod(r, 32)
            out.append(_ALNUM[d % 27])
        return "".join(out)

    def container_id(self) -> str:
        return f"containerd://{self._bits(256):064x}"

    def aws(self, prefix: str) -> str:
        """An AWS resource id such as i-0..., vol-0..., sg-0... (17 hex digits)."""
        return f"{prefix}-0{self.hex(16)}"


# ---------------------------------------------------------------------------- instances

@dataclass(frozen=True, slots=True)
class InstanceType:
    """What an EC2 type gives the kubelet; allocatable follows the EKS AMI reservations."""

    name: str
    vcpus: int
    memory_mib: int
    max_pods: int  # ENI-limited (VPC CNI without prefix delegation)
    arch: str
    gpus: int = 0

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def allocatable_cpu_millis(self) -> int:
        v = self.vcpus
        reserved = 60 + (10 if v > 1 else 0) + 5 * min(2, max(0, v - 2)) + 2.5 * max(0, v - 4)
        return int(v * 1000 - reserved)

    @property
    def capacity_memory_ki(self) -> int:
        return int(self.memory_mib * 1024 * 0.955)  # the kernel keeps ~4.5%

    @property
    def allocatable_memory_ki(self) -> int:
        return self.capacity_memory_ki - (255 + 11 * self.max_pods + 100) * 1024


_SIZE_VCPUS = {"medium": 1, "large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16,
               "8xlarge": 32, "9xlarge": 36, "12xlarge": 48, "16xlarge": 64, "18xlarge": 72}
_SIZE_PODS = {"medium": 8, "large": 29, "xlarge": 58, "2xlarge": 58, "4xlarge": 234,
              "8xlarge": 234, "9xlarge": 234, "12xlarge": 234, "16xlarge": 737,
              "18xlarge": 737}
_M_SIZES = ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge")
_C5_SIZES = ("large", "xlarge", "2xlarge", "4xlarge", "9xlarge", "12xlarge", "18xlarge")
_FAMILIES: dict[str, tuple[float, str, tuple[str, ...]]] = {  # GiB per vCPU, arch, sizes
    "m5": (4, "amd64", _M_SIZES), "c5": (2, "amd64", _C5_SIZES), "r5": (8, "amd64", _M_SIZES),
    "m5a": (4, "amd64", _M_SIZES), "m6a": (4, "amd64", _M_SIZES),
    "m6i": (4, "amd64", _M_SIZES), "c6i": (2, "amd64", _M_SIZES), "r6i": (8, "amd64", _M_SIZES),
    "m7i": (4, "amd64", _M_SIZES),
    "m6g": (4, "arm64", ("medium", *_M_SIZES)), "c6g": (2, "arm64", ("medium", *_M_SIZES)),
    "r6g": (8, "arm64", ("medium", *_M_SIZES)),
    "c3": (1.875, "amd64", ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge")),
    "m3": (3.75, "amd64", ("medium", "large", "xlarge", "2xlarge")),
    "g4dn": (4, "amd64", ("xlarge", "2xlarge", "4xlarge")),
}
_POD_OVERRIDES = {"m3.medium": 12, "m3.2xlarge": 118, "g4dn.xlarge": 29, "g4dn.2xlarge": 29,
                  "g4dn.4xlarge": 29}


def _catalog() -> dict[str, InstanceType]:
    out: dict[str, InstanceType] = {}
    for fam, (gib, arch, sizes) in _FAMILIES.items():
        for size in sizes:
            name = f"{fam}.{size}"
            v = _SIZE_VCPUS[size]
            out[name] = InstanceType(name, v, int(v * gib * 1024),
                                     _POD_OVERRIDES.get(name, _SIZE_PODS[size]), arch,
                                     gpus=1 if fam == "g4dn" else 0)
    return out


INSTANCE_TYPES = _catalog()


def kernel_for(os_image: str, arch: str) -> str:
    machine = "x86_64" if arch == "amd64" else "aarch64"
    if os_image.startswith("Amazon Linux 2023"):
        return f"6.1.124-134.200.amzn2023.{machine}"
    if os_image.startswith("Amazon Linux 2"):
        return f"5.10.233-224.894.amzn2.{machine}"
    return "6.1.119"  # Bottlerocket


# ---------------------------------------------------------------------------- network

@dataclass
class Subnet:
    """A VPC subnet handing out addresses in order (AWS keeps the first four and the last)."""

    id: str
    zone: str
    cidr: str
    tags: dict[str, str]
    next_ip: int = 0
    last_ip: int = 0

    def __post_init__(self) -> None:
        net = ipaddress.IPv4Network(self.cidr)
        self.next_ip = int(net.network_address) + 4
        self.last_ip = int(net.broadcast_address) - 1

    def allocate(self) -> str:
        if self.next_ip > self.last_ip:
            raise ValueError(f"subnet {self.id} ({self.cidr}) has no free address left")
        n = self.next_ip
        self.next_ip += 1
        return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    def info(self) -> JSON:
        return {"id": self.id, "zone": self.zone, "cidr": self.cidr, "tags": dict(self.tags)}


def node_name(ip: str, region: str) -> str:
    """EC2 private DNS name, which EKS uses as the node name."""
    domain = "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"
    return f"ip-{ip.replace('.', '-')}.{domain}"


# ---------------------------------------------------------------------------- pod parts

@dataclass(frozen=True)
class ContainerSpec:
    """One container of a pod template.

    `memory_limit`: "" means equal to the request (the common Burstable shape), None means
    no limit. `resources` are extended resources (e.g. nvidia.com/gpu), set as both request
    and limit like Kubernetes requires.
    """

    name: str
    image: str
    cpu: str = "100m"
    memory: str = "128Mi"
    cpu_limit: str = ""
    memory_limit: str | None = ""
    ports: tuple[tuple[str, int], ...] = ()
    mounts: tuple[tuple[str, str], ...] = ()  # (volume name, mount path)
    resources: Mapping[str, str] = field(default_factory=dict)
    tty: bool = False
    stdin: bool = False
    args: tuple[str, ...] = ()
    privileged: bool = False

    def limits(self) -> dict[str, str]:
        lim: dict[str, str] = {}
        if self.cpu_limit:
            lim["cpu"] = self.cpu_limit
        if self.memory_limit == "":
            lim["memory"] = self.memory
        elif self.memory_limit is not None:
            lim["memory"] = self.memory_limit
        lim.update(self.resources)
        return lim

    def render(self) -> JSON:
        req = {"cpu": self.cpu, "memory": self.memory, **self.resources}
        resources: JSON = {"requests": req}
        lim = self.limits()
        if lim:
            resources["limits"] = lim
        c: JSON = {"name": self.name, "image": self.image, "imagePullPolicy": "IfNotPresent"}
        if self.args:
            c["args"] = list(self.args)
        if self.ports:
            c["ports"] = [{"containerPort": p, "name": n, "protocol": "TCP"}
                          for n, p in self.ports]
        c["resources"] = resources
        if self.privileged:
            c["securityContext"] = {"privileged": True}
        if self.stdin:
            c["stdin"] = True
        c["terminationMessagePath"] = "/dev/termination-log"
        c["terminationMessagePolicy"] = "File"
        if self.tty:
            c["tty"] = True
        if self.mounts:
            c["volumeMounts"] = [{"mountPath": path, "name": vol} for vol, path in self.mounts]
        return c


def config_map_volume(name: str, config_map: str) -> JSON:
    return {"name": name, "configMap": {"defaultMode": 420, "name": config_map}}


def secret_volume(name: str, secret: str) -> JSON:
    return {"name": name, "secret": {"defaultMode": 420, "secretName": secret}}


def empty_dir_volume(name: str, medium: str = "", size_limit: str = "") -> JSON:
    spec: JSON = {}
    if medium:
        spec["medium"] = medium
    if size_limit:
        spec["sizeLimit"] = size_limit
    return {"name": name, "emptyDir": spec}


def host_path_volume(name: str, path: str, kind: str = "Directory") -> JSON:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def nfs_volume(name: str, server: str, path: str) -> JSON:
    return {"name": name, "nfs": {"server": server, "path": path}}


def ebs_inline_volume(name: str, zone: str, volume_id: str) -> JSON:
    """In-tree `awsElasticBlockStore` (pre-CSI manifests); the zone is in the volume URL."""
    return {"name": name, "awsElasticBlockStore": {"fsType": "ext4",
                                                   "volumeID": f"aws://{zone}/{volume_id}"}}


def pvc_volume(name: str, claim: str) -> JSON:
    return {"name": name, "persistentVolumeClaim": {"claimName": claim}}


def downward_api_volume(name: str) -> JSON:
    return {"name": name, "downwardAPI": {"defaultMode": 420, "items": [
        {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}, "path": "labels"},
        {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations"},
         "path": "annotations"}]}}


def ephemeral_volume(name: str, size: str, storage_class: str = "gp3") -> JSON:
    return {"name": name, "ephemeral": {"volumeClaimTemplate": {"spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}},
        "storageClassName": storage_class}}}}


def csi_inline_volume(name: str, driver: str, attributes: Mapping[str, str]) -> JSON:
    return {"name": name, "csi": {"driver": driver, "readOnly": True,
                                  "volumeAttributes": dict(attributes)}}


def _token_volume(name: str) -> JSON:
    """The service-account volume admission adds to every pod (a projected volume)."""
    return {"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}],
                       "name": "kube-root-ca.crt"}},
        {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1",
                                                 "fieldPath": "metadata.namespace"},
                                    "path": "namespace"}]}}]}}


def toleration(key: str, value: str = "", effect: str = "NoSchedule") -> JSON:
    if value:
        return {"effect": effect, "key": key, "operator": "Equal", "value": value}
    return {"effect": effect, "key": key, "operator": "Exists"}


TOLERATE_ALL = ({"operator": "Exists"},)
_DEFAULT_TOLERATIONS = (  # added by the DefaultTolerationSeconds admission plugin
    {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists",
     "tolerationSeconds": 300},
    {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists",
     "tolerationSeconds": 300})
_DAEMONSET_TOLERATIONS = (  # added by the DaemonSet controller
    {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists"},
    {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists"},
    {"effect": "NoSchedule", "key": "node.kubernetes.io/disk-pressure", "operator": "Exists"},
    {"effect": "NoSchedule", "key": "node.kubernetes.io/memory-pressure",
     "operator": "Exists"},
    {"effect": "NoSchedule", "key": "node.kubernetes.io/pid-pressure", "operator": "Exists"},
    {"effect": "NoSchedule", "key": "node.kubernetes.io/unschedulable", "operator": "Exists"})
PRIORITIES = {"system-node-critical": 2_000_001_000, "system-cluster-critical": 2_000_000_000,
              "business-critical": 100_000, "batch-low": -10}


def _copy(x: Any) -> Any:
    """Deep copy of plain JSON data, so each pod owns its tree (orjson: 10x deepcopy)."""
    return orjson.loads(orjson.dumps(x))


@dataclass(frozen=True)
class ClaimTemplate:
    """A StatefulSet volumeClaimTemplate; `storage` is one of ClusterBuilder.add_claim's."""

    name: str
    mount: str = "/data"
    size: str = "20Gi"
    storage: str = "ebs"


@dataclass
class Workload:
    """A controller and its pod template, from which `ClusterBuilder` stamps out pods.

    `kind` is Deployment, StatefulSet, DaemonSet, Job, CronJob, Rollout (Argo, a custom
    controller owning a ReplicaSet), ReplicaSet (no Deployment above it) or Pod (bare).
    """

    namespace: str
    name: str
    kind: str = "Deployment"
    containers: tuple[ContainerSpec, ...] = ()
    init_containers: tuple[ContainerSpec, ...] = ()
    volumes: tuple[JSON, ...] = ()
    claims: tuple[ClaimTemplate, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)  # extra pod-template labels
    annotations: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    affinity: JSON | None = None
    tolerations: tuple[JSON, ...] = ()
    priority_class: str = ""
    host_network: bool = False
    service_account: str = "default"
    schedule: str = "0 2 * * *"  # CronJob only
    created: int = NOW - 40 * DAY

    def qos(self) -> str:
        cs = (*self.containers, *self.init_containers)
        if all(c.cpu_limit == c.cpu and c.memory_limit in ("", c.memory) for c in cs):
            return "Guaranteed"
        return "Burstable"


@dataclass
class _Prepared:
    """What every pod of one workload shares, computed once."""

    spec: JSON
    labels: dict[str, str]
    owner: list[JSON]
    qos: str
    digests: dict[str, str]


# ---------------------------------------------------------------------------- builder

class ClusterBuilder:
    """Accumulates one cluster's objects and renders the snapshot List.

    Pods are placed where the caller says (a node name, or None for Pending), so the same
    builder serves hand-placed examples and random layouts. Zonal claims take the zone of
    the node their first pod lands on, as the EBS CSI driver does with
    WaitForFirstConsumer.
    """

    def __init__(self, name: str, *, seed: int = 0, region: str = REGION,
                 platform: str = "eks", kubernetes_version: str = KUBERNETES_VERSION,
                 prefix_delegation: bool = False, now: int = NOW) -> None:
        self.name = name
        self.region = region
        self.platform = platform
        self.kubernetes_version = kubernetes_version
        self.prefix_delegation = prefix_delegation
        self.now = now
        self.rng = random.Random(seed)
        self.ids = Ids(self.rng)
        self.subnets: list[Subnet] = []
        self.kinds: dict[str, list[JSON]] = {k: [] for k in (
            "Node", "Pod", "PersistentVolumeClaim", "PersistentVolume",
            "PodDisruptionBudget", "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet",
            "Job", "CronJob", "ENIConfig")}
        self.node_zone: dict[str, str] = {}
        self.node_type: dict[str, InstanceType] = {}
        self.node_created: dict[str, int] = {}
        self._node_ip: dict[str, str] = {}
        self._node_uid: dict[str, str] = {}
        self._pod_subnet: dict[str, Subnet] = {}
        self._eni: dict[str, Subnet] = {}
        self._ns_pods: dict[str, list[JSON]] = {}
        self._pod_names: dict[str, set[str]] = {}
        self._app_pods: dict[tuple[str, str], list[JSON]] = {}
        self._sg = self.ids.aws("sg")
        self._rv = 4_000_000
        self._cloud_hash = self.ids.hex(32)

    # -- small helpers -----------------------------------------------------------------
    def _meta(self, name: str, created: int, namespace: str | None = None,
              labels: Mapping[str, str] | None = None,
              annotations: Mapping[str, str] | None = None) -> JSON:
        self._rv += 1
        m: JSON = {}
        if annotations:
            m["annotations"] = dict(annotations)
        m["creationTimestamp"] = ts(created)
        if labels:
            m["labels"] = dict(labels)
        m["name"] = name
        if namespace is not None:
            m["namespace"] = namespace
        m["resourceVersion"] = str(self._rv)
        m["uid"] = self.ids.uid()
        return m

    # -- network -----------------------------------------------------------------------
    def add_subnet(self, zone: str, cidr: str, *, name: str = "",
                   tags: Mapping[str, str] | None = None, subnet_id: str = "",
                   for_pods: bool = False) -> Subnet:
        """A subnet as ClusterInfo lists it; `for_pods` marks an ENIConfig pod subnet (no
        load-balancer role tag)."""
        all_tags = {"Name": name or f"{self.name}-{'pods' if for_pods else 'private'}-{zone}",
                    f"kubernetes.io/cluster/{self.name}": "shared"}
        if not for_pods:
            all_tags["kubernetes.io/role/internal-elb"] = "1"
        all_tags.update(tags or {})
        s = Subnet(subnet_id or self.ids.aws("subnet"), zone, cidr, all_tags)
        self.subnets.append(s)
        return s

    def add_eniconfig(self, name: str, subnet: Subnet) -> None:
        """Custom networking: nodes labelled k8s.amazonaws.com/eniConfig=<name> (or, for
        ENIConfigs named after a zone, all nodes of that zone) take pod IPs from `subnet`."""
        self._eni[name] = subnet
        obj: JSON = {"apiVersion": "crd.k8s.amazonaws.com/v1alpha1", "kind": "ENIConfig",
               "metadata": self._meta(name, self.now - 400 * DAY), "spec": {
                   "securityGroups": [self._sg], "subnet": subnet.id}}
        obj["metadata"]["generation"] = 1
        self.kinds["ENIConfig"].append(obj)

    # -- nodes -------------------------------------------------------------------------
    def add_node(self, instance_type: str, subnet: Subnet, *, created: int,
                 managed: bool = True, labels: Mapping[str, str] | None = None,
                 taints: Sequence[tuple[str, str, str]] = (), unschedulable: bool = False,
                 ready: bool = True, os_image: str = AL2023_IMAGE, runtime: str = CONTAINERD,
                 eniconfig: str = "", custom_network: bool = False, spot: bool = False,
                 template: str = "default-by-castai", nodegroup: str = "",
                 karpenter_pool: str = "", cpu: str = "") -> str:
        """Add a Node; returns its name (the EC2 private DNS name of its address).

        `cpu` names a CPU model from CPU_MODELS; its node-feature-discovery labels are
        added. Cordoned and NotReady nodes get the taints Kubernetes itself adds.
        """
        it = INSTANCE_TYPES[instance_type]
        ip = subnet.allocate()
        name = node_name(ip, self.region)
        zone, arch = subnet.zone, it.arch
        instance_id = self.ids.aws("i")
        lab: dict[str, str] = {
            "beta.kubernetes.io/arch": arch, "beta.kubernetes.io/instance-type": it.name,
            "beta.kubernetes.io/os": "linux",
            "failure-domain.beta.kubernetes.io/region": self.region,
            "failure-domain.beta.kubernetes.io/zone": zone,
            "k8s.io/cloud-provider-aws": self._cloud_hash,
            "kubernetes.io/arch": arch, "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": it.name,
            "topology.ebs.csi.aws.com/zone": zone,
            "topology.k8s.aws/zone-id": ZONE_IDS.get(zone, "use1-az9"),
            "topology.kubernetes.io/region": self.region, "topology.kubernetes.io/zone": zone,
        }
        if managed:
            lab.update({MANAGED_BY: "cast.ai", "provisioner.cast.ai/node-id": self.ids.uid(),
                        "scheduling.cast.ai/node-template": template,
                        "topology.cast.ai/subnet-id": subnet.id})
            if spot:
                lab["scheduling.cast.ai/spot"] = "true"
        if nodegroup:
            lab.update({"eks.amazonaws.com/capacityType": "SPOT" if spot else "ON_DEMAND",
                        "eks.amazonaws.com/nodegroup": nodegroup,
                        "eks.amazonaws.com/nodegroup-image": self.ids.aws("ami"),
                        "eks.amazonaws.com/sourceLaunchTemplateId": self.ids.aws("lt"),
                        "eks.amazonaws.com/sourceLaunchTemplateVersion": "3"})
        if karpenter_pool:
            fam, size = it.name.split(".", 1)
            lab.update({"karpenter.k8s.aws/ec2nodeclass": "default",
                        "karpenter.k8s.aws/instance-category": fam[0],
                        "karpenter.k8s.aws/instance-cpu": str(it.vcpus),
                        "karpenter.k8s.aws/instance-family": fam,
                        "karpenter.k8s.aws/instance-generation": "".join(
                            ch for ch in fam if ch.isdigit()),
                        "karpenter.k8s.aws/instance-hypervisor": "nitro",
                        "karpenter.k8s.aws/instance-memory": str(it.memory_mib),
                        "karpenter.k8s.aws/instance-size": size,
                        "karpenter.sh/capacity-type": "spot" if spot else "on-demand",
                        "karpenter.sh/initialized": "true", "karpenter.sh/nodepool": karpenter_pool,
                        "karpenter.sh/registered": "true"})
        if eniconfig:
            lab["k8s.amazonaws.com/eniConfig"] = eniconfig
        if custom_network:
            lab[CUSTOM_NETWORK] = "true"
        if cpu:
            vendor, family, model = CPU_MODELS[cpu]
            lab.update({f"{NFD_CPUID}{f}": "true" for f in _CPU_FEATURES[cpu]})
            lab.update({"feature.node.kubernetes.io/cpu-model.family": family,
                        "feature.node.kubernetes.io/cpu-model.id": model,
                        "feature.node.kubernetes.io/cpu-model.vendor_id": vendor})
        lab.update(labels or {})
        created_ts, seen = ts(created), ts(self.now - 20)
        taint_list: list[JSON] = [{"effect": e, "key": k, **({"value": v} if v else {})}
                                  for k, v, e in taints]
        if unschedulable:
            taint_list.append({"effect": "NoSchedule", "key": "node.kubernetes.io/unschedulable",
                               "timeAdded": ts(self.now - 3 * 3600)})
        if not ready:
            for effect in ("NoSchedule", "NoExecute"):
                taint_list.append({"effect": effect, "key": "node.kubernetes.io/not-ready",
                                   **({"timeAdded": ts(self.now - 240)}
                                      if effect == "NoExecute" else {})})
        spec: JSON = {"providerID": f"aws:///{zone}/{instance_id}"}
        if taint_list:
            spec["taints"] = taint_list
        if unschedulable:
            spec["unschedulable"] = True
        conditions: list[JSON] = [
            {"lastHeartbeatTime": seen, "lastTransitionTime": created_ts,
             "message": f"kubelet has {msg}", "reason": reason, "status": "False", "type": t}
            for t, reason, msg in (
                ("MemoryPressure", "KubeletHasSufficientMemory", "sufficient memory available"),
                ("DiskPressure", "KubeletHasNoDiskPressure", "no disk pressure"),
                ("PIDPressure", "KubeletHasSufficientPID", "sufficient PID available"))]
        if ready:
            conditions.append({"lastHeartbeatTime": seen, "lastTransitionTime": ts(created + 40),
                               "message": "kubelet is posting ready status",
                               "reason": "KubeletReady", "status": "True", "type": "Ready"})
        else:
            conditions.append({"lastHeartbeatTime": seen, "lastTransitionTime": ts(self.now - 300),
                               "message": "container runtime network not ready: NetworkReady="
                               "false reason:NetworkPluginNotReady message:Network plugin "
                               "returns error: cni plugin not initialized",
                               "reason": "KubeletNotReady", "status": "False", "type": "Ready"})
        storage_ki = 83_873_772
        capacity = {"cpu": str(it.vcpus), "ephemeral-storage": f"{storage_ki}Ki",
                    "hugepages-1Gi": "0", "hugepages-2Mi": "0",
                    "memory": f"{it.capacity_memory_ki}Ki", "pods": str(it.max_pods)}
        allocatable = {"cpu": f"{it.allocatable_cpu_millis}m",
                       "ephemeral-storage": "76224326324", "hugepages-1Gi": "0",
                       "hugepages-2Mi": "0", "memory": f"{it.allocatable_memory_ki}Ki",
                       "pods": str(it.max_pods)}
        if it.gpus:
            capacity["nvidia.com/gpu"] = allocatable["nvidia.com/gpu"] = str(it.gpus)
        annotations = {"alpha.kubernetes.io/provided-node-ip": ip,
                       "csi.volume.kubernetes.io/nodeid": '{"ebs.csi.aws.com":"'
                       + instance_id + '","efs.csi.aws.com":"' + instance_id + '"}',
                       "node.alpha.kubernetes.io/ttl": "0",
                       "volumes.kubernetes.io/controller-managed-attach-detach": "true"}
        meta = self._meta(name, created, labels=lab, annotations=annotations)
        self._node_uid[name] = meta["uid"]
        node = {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec, "status": {
            "addresses": [{"address": ip, "type": "InternalIP"},
                          {"address": name, "type": "InternalDNS"},
                          {"address": name, "type": "Hostname"}],
            "allocatable": allocatable, "capacity": capacity, "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"architecture": arch, "bootID": self.ids.uid(),
                         "containerRuntimeVersion": runtime,
                         "kernelVersion": kernel_for(os_image, arch),
                         "kubeProxyVersion": KUBELET_VERSION, "kubeletVersion": KUBELET_VERSION,
                         "machineID": self.ids.hex(32), "operatingSystem": "linux",
                         "osImage": os_image,
                         "systemUUID": "ec2" + self.ids.uid()[3:]}}}
        self.kinds["Node"].append(node)
        self.node_zone[name] = zone
        self.node_type[name] = it
        self.node_created[name] = created
        self._node_ip[name] = ip
        self._pod_subnet[name] = self._eni[eniconfig] if eniconfig in self._eni else (
            self._eni.get(zone, subnet))
        return name

    # -- storage -----------------------------------------------------------------------
    def add_claim(self, namespace: str, name: str, *, storage: str = "ebs",
                  size: str = "20Gi", node: str | None = None, zone: str = "",
                  created: int | None = None, labels: Mapping[str, str] | None = None,
                  bound: bool = True) -> str:
        """Add a PVC and the PV bound to it; returns the claim name.

        storage: ebs (CSI; zone in nodeAffinity, alternating between the driver's old and
        new topology key), ebs-intree (kubernetes.io/aws-ebs PV), efs (CSI, any zone),
        nfs (static PV), local (`local` PV pinned to `node`). An unbound claim stays
        Pending with no PV, like a WaitForFirstConsumer claim whose pod cannot schedule.
        """
        made = created if created is not None else self.now - 30 * DAY
        zone = zone or (self.node_zone[node] if node else "")
        if bound and not zone and storage in ("ebs", "ebs-intree"):
            raise ValueError(f"claim {namespace}/{name}: an EBS volume needs a zone or node")
        rwx = storage in ("efs", "nfs")
        sc = {"ebs": "gp3", "ebs-intree": "gp2", "efs": "efs-sc", "nfs": "",
              "local": "local-storage"}[storage]
        pvc_meta = self._meta(name, made, namespace, labels, annotations={
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            **({"volume.kubernetes.io/selected-node": node} if node and storage == "ebs"
               else {})} if bound else None)
        access = "ReadWriteMany" if rwx else "ReadWriteOnce"
        pvc_spec: JSON = {"accessModes": [access], "resources": {"requests": {"storage": size}},
                          "storageClassName": sc, "volumeMode": "Filesystem"}
        pvc: JSON = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": pvc_meta, "spec": pvc_spec,
                     "status": {"phase": "Pending"}}
        self.kinds["PersistentVolumeClaim"].append(pvc)
        if not bound:
            return name
        pv_name = f"pvc-{pvc_meta['uid']}" if storage != "nfs" else f"{namespace}-{name}"
        pvc_spec["volumeName"] = pv_name
        pvc["status"] = {"accessModes": [access], "capacity": {"storage": size},
                         "phase": "Bound"}
        spec: JSON = {"accessModes": [access], "capacity": {"storage": size},
                      "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                   "name": name, "namespace": namespace,
                                   "resourceVersion": pvc_meta["resourceVersion"],
                                   "uid": pvc_meta["uid"]},
                      "persistentVolumeReclaimPolicy": "Retain" if storage in (
                          "nfs", "local") else "Delete",
                      "storageClassName": sc, "volumeMode": "Filesystem"}
        pv_labels: dict[str, str] = {}
        annotations: dict[str, str] = {}
        if storage == "ebs":
            key = ("topology.ebs.csi.aws.com/zone" if len(self.kinds["PersistentVolume"]) % 2
                   else "topology.kubernetes.io/zone")
            annotations = {"pv.kubernetes.io/provisioned-by": "ebs.csi.aws.com",
                           "volume.kubernetes.io/provisioner-deletion-secret-name": "",
                           "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""}
            spec["csi"] = {"driver": "ebs.csi.aws.com", "fsType": "ext4", "volumeAttributes": {
                "storage.kubernetes.io/csiProvisionerIdentity": "1736930000000-9034-ebs.csi."
                "aws.com"}, "volumeHandle": self.ids.aws("vol")}
            spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": key, "operator": "In", "values": [zone]}]}]}}
        elif storage == "ebs-intree":
            annotations = {"kubernetes.io/createdby": "aws-ebs-dynamic-provisioner",
                           "pv.kubernetes.io/bound-by-controller": "yes",
                           "pv.kubernetes.io/provisioned-by": "kubernetes.io/aws-ebs"}
            pv_labels = {"topology.kubernetes.io/region": self.region,
                         "topology.kubernetes.io/zone": zone}
            spec["awsElasticBlockStore"] = {"fsType": "ext4",
                                            "volumeID": f"aws://{zone}/{self.ids.aws('vol')}"}
            spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]},
                {"key": "topology.kubernetes.io/region", "operator": "In",
                 "values": [self.region]}]}]}}
        elif storage == "efs":
            annotations = {"pv.kubernetes.io/provisioned-by": "efs.csi.aws.com"}
            spec["csi"] = {"driver": "efs.csi.aws.com", "volumeHandle":
                           f"fs-0{self.ids.hex(16)}::fsap-0{self.ids.hex(16)}"}
        elif storage == "nfs":
            spec["mountOptions"] = ["nfsvers=4.1", "hard"]
            spec["nfs"] = {"path": f"/exports/{namespace}/{name}", "server": "10.20.250.10"}
        elif storage == "local":
            if not node:
                raise ValueError("a local volume needs the node it lives on")
            spec["local"] = {"path": f"/mnt/nvme/{namespace}-{name}"}
            spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
        else:
            raise ValueError(f"unknown storage kind {storage!r}")
        pv_meta = self._meta(pv_name, made, labels=pv_labels, annotations=annotations)
        pv_meta["finalizers"] = ["kubernetes.io/pv-protection"]
        self.kinds["PersistentVolume"].append({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": pv_meta, "spec": spec,
            "status": {"lastPhaseTransitionTime": ts(made), "phase": "Bound"}})
        return name

    # -- workloads ---------------------------------------------------------------------
    def _prepare(self, w: Workload, labels: dict[str, str]) -> _Prepared:
        """The pod template of `w` as its controller holds it, plus shared pod facts."""
        restart = "Never" if w.kind in ("Job", "CronJob") else "Always"
        spec: JSON = {"containers": [c.render() for c in w.containers],
                      "dnsPolicy": "ClusterFirstWithHostNet" if w.host_network
                      else "ClusterFirst"}
        if w.host_network:
            spec["hostNetwork"] = True
        if w.init_containers:
            spec["initContainers"] = [c.render() for c in w.init_containers]
        if w.node_selector:
            spec["nodeSelector"] = dict(w.node_selector)
        if w.affinity:
            spec["affinity"] = _copy(w.affinity)
        if w.priority_class:
            spec["priorityClassName"] = w.priority_class
        spec.update({"restartPolicy": restart, "schedulerName": "default-scheduler",
                     "securityContext": {}, "serviceAccountName": w.service_account,
                     "terminationGracePeriodSeconds": 30})
        if w.tolerations:
            spec["tolerations"] = [dict(t) for t in w.tolerations]
        spec["volumes"] = [_copy(v) for v in w.volumes]
        digests = {c.image: f"sha256:{self.ids.hex(64)}"
                   for c in (*w.containers, *w.init_containers)}
        return _Prepared(spec, labels, [], w.qos(), digests)

    def _template(self, prep: _Prepared) -> JSON:
        spec = _copy(prep.spec)
        if not spec["volumes"]:
            del spec["volumes"]
        return {"metadata": {"labels": dict(prep.labels)}, "spec": spec}

    def _controller(self, kind: str, api: str, w: Workload, name: str, labels: dict[str, str],
                    spec: JSON, status: JSON, owner: list[JSON] | None = None,
                    annotations: Mapping[str, str] | None = None,
                    created: int | None = None) -> JSON:
        meta = self._meta(name, w.created if created is None else created, w.namespace,
                          labels, annotations)
        meta["generation"] = 1
        if owner:
            meta["ownerReferences"] = owner
        obj = {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec,
               "status": status}
        self.kinds[kind].append(obj)
        return obj

    def _generated(self, namespace: str, prefix: str) -> str:
        """`<prefix>-<5 random chars>` unused in the namespace, as the API server's
        generateName retries until the name is free."""
        taken = self._pod_names.setdefault(namespace, set())
        while True:
            name = f"{prefix}-{self.ids.suffix()}"
            if name not in taken:
                taken.add(name)
                return name

    def _reserve(self, namespace: str, names: Sequence[str]) -> None:
        taken = self._pod_names.setdefault(namespace, set())
        clash = taken.intersection(names)
        if clash or len(set(names)) != len(names):
            raise ValueError(f"pod names already used in {namespace}: {sorted(clash)}")
        taken.update(names)

    @staticmethod
    def _ref(obj: JSON) -> list[JSON]:
        return [{"apiVersion": obj["apiVersion"], "blockOwnerDeletion": True,
                 "controller": True, "kind": obj["kind"], "name": obj["metadata"]["name"],
                 "uid": obj["metadata"]["uid"]}]

    def add_workload(self, w: Workload, placement: Sequence[str | None],
                     pod_labels: Mapping[int, Mapping[str, str]] | None = None,
                     phases: Mapping[int, str] | None = None) -> list[str]:
        """Add a controller (and its ReplicaSet/Job) plus one pod per `placement` entry.

        `placement[i]` is the node of pod i, or None for a Pending pod. `pod_labels` adds
        labels to single pods (e.g. the migration-enabled label the system wrote);
        `phases` overrides a pod's phase (Succeeded for finished Job pods).
        """
        phases = phases or {}
        n = len(placement)
        ready = sum(1 for i, p in enumerate(placement)
                    if p and phases.get(i, "Running") == "Running")
        base = {"app": w.name, "app.kubernetes.io/name": w.name,
                "app.kubernetes.io/part-of": w.namespace}
        if w.kind in ("Deployment", "Rollout", "ReplicaSet"):
            prep, names = self._replicaset(w, n, ready, base)
        elif w.kind == "StatefulSet":
            prep, names = self._statefulset(w, n, ready, base)
        elif w.kind == "DaemonSet":
            prep, names = self._daemonset(w, n, ready, base)
        elif w.kind in ("Job", "CronJob"):
            prep, names, created = self._job(w, n, ready, base, phases)
            w = replace(w, created=created)
        elif w.kind == "Pod":
            prep = self._prepare(w, {**base, **w.labels})
            names = [w.name] if n == 1 else [f"{w.name}-{i}" for i in range(n)]
            self._reserve(w.namespace, names)
        else:
            raise ValueError(f"unknown workload kind {w.kind!r}")
        for i, (pod, node) in enumerate(zip(names, placement, strict=True)):
            vols = []
            for c in w.claims if w.kind == "StatefulSet" else ():
                claim = f"{c.name}-{pod}"
                self.add_claim(w.namespace, claim, storage=c.storage, size=c.size, node=node,
                               labels={"app": w.name}, created=w.created,
                               bound=node is not None)
                vols.append(pvc_volume(c.name, claim))
            self._pod(w, prep, pod, node, (pod_labels or {}).get(i),
                      phases.get(i, "Running" if node else "Pending"), vols)
        return names

    def _replicaset(self, w: Workload, n: int, ready: int, base: dict[str, str]
                    ) -> tuple[_Prepared, list[str]]:
        """Deployment -> ReplicaSet, Argo Rollout -> ReplicaSet, or a bare ReplicaSet."""
        sel = {"app": w.name}
        hashed = self.ids.suffix(10)
        hash_key = "rollouts-pod-template-hash" if w.kind == "Rollout" else "pod-template-hash"
        bare = w.kind == "ReplicaSet"
        rs_name = w.name if bare else f"{w.name}-{hashed}"
        labels = {**base, **w.labels, **({} if bare else {hash_key: hashed})}
        prep = self._prepare(w, labels)
        owner: list[JSON] | None = None
        if w.kind == "Deployment":
            dep = self._controller(
                "Deployment", "apps/v1", w, w.name, base, {
                    "progressDeadlineSeconds": 600, "replicas": n, "revisionHistoryLimit": 10,
                    "selector": {"matchLabels": sel},
                    "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                                 "type": "RollingUpdate"},
                    "template": self._template(self._prepare(w, {**base, **w.labels}))},
                {"availableReplicas": ready, "observedGeneration": 1, "readyReplicas": ready,
                 "replicas": n, "updatedReplicas": n},
                annotations={"deployment.kubernetes.io/revision": "1"})
            owner = self._ref(dep)
        elif w.kind == "Rollout":  # the Rollout object itself is not in the kubectl list
            owner = [{"apiVersion": "argoproj.io/v1alpha1", "blockOwnerDeletion": True,
                      "controller": True, "kind": "Rollout", "name": w.name,
                      "uid": self.ids.uid()}]
        rs = self._controller(
            "ReplicaSet", "apps/v1", w, rs_name, base if bare else labels,
            {"replicas": n, "selector": {"matchLabels": {
                **sel, **({} if bare else {hash_key: hashed})}},
             "template": self._template(prep)},
            {"availableReplicas": ready, "fullyLabeledReplicas": n, "observedGeneration": 1,
             "readyReplicas": ready, "replicas": n}, owner,
            annotations={"deployment.kubernetes.io/desired-replicas": str(n),
                         "deployment.kubernetes.io/max-replicas": str(n + 1),
                         "deployment.kubernetes.io/revision": "1"}
            if w.kind == "Deployment" else None)
        prep.owner = self._ref(rs)
        return prep, [self._generated(w.namespace, rs_name) for _ in range(n)]

    def _statefulset(self, w: Workload, n: int, ready: int, base: dict[str, str]
                     ) -> tuple[_Prepared, list[str]]:
        rev = f"{w.name}-{self.ids.suffix(10)}"
        prep = self._prepare(w, {**base, **w.labels, "controller-revision-hash": rev})
        storage_class = {"local": "local-storage", "ebs-intree": "gp2"}
        sts = self._controller(
            "StatefulSet", "apps/v1", w, w.name, base, {
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain",
                                                         "whenScaled": "Retain"},
                "podManagementPolicy": "OrderedReady", "replicas": n,
                "revisionHistoryLimit": 10, "selector": {"matchLabels": {"app": w.name}},
                "serviceName": w.name, "template": self._template(prep),
                "updateStrategy": {"rollingUpdate": {"partition": 0}, "type": "RollingUpdate"},
                "volumeClaimTemplates": [
                    {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": c.name}, "spec": {
                         "accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": c.size}},
                         "storageClassName": storage_class.get(c.storage, "gp3"),
                         "volumeMode": "Filesystem"}} for c in w.claims]},
            {"availableReplicas": ready, "collisionCount": 0, "currentReplicas": n,
             "currentRevision": rev, "observedGeneration": 1, "readyReplicas": ready,
             "replicas": n, "updateRevision": rev, "updatedReplicas": n})
        prep.owner = self._ref(sts)
        names = [f"{w.name}-{i}" for i in range(n)]
        self._reserve(w.namespace, names)
        return prep, names

    def _daemonset(self, w: Workload, n: int, ready: int, base: dict[str, str]
                   ) -> tuple[_Prepared, list[str]]:
        prep = self._prepare(w, {**base, **w.labels, "controller-revision-hash":
                                 self.ids.suffix(9), "pod-template-generation": "1"})
        ds = self._controller(
            "DaemonSet", "apps/v1", w, w.name, base, {
                "revisionHistoryLimit": 10, "selector": {"matchLabels": {"app": w.name}},
                "template": self._template(prep),
                "updateStrategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
                                   "type": "RollingUpdate"}},
            {"currentNumberScheduled": n, "desiredNumberScheduled": n,
             "numberAvailable": ready, "numberMisscheduled": 0, "numberReady": ready,
             "observedGeneration": 1, "updatedNumberScheduled": n})
        prep.owner = self._ref(ds)
        return prep, [self._generated(w.namespace, w.name) for _ in range(n)]

    def _job(self, w: Workload, n: int, ready: int, base: dict[str, str],
             phases: Mapping[int, str]) -> tuple[_Prepared, list[str], int]:
        """A Job, or a CronJob with its current Job (named after its scheduled minute)."""
        cron: JSON | None = None
        job_name, created = w.name, w.created
        if w.kind == "CronJob":
            created = self.now - self.rng.randrange(600, 20_000)
            job_name = f"{w.name}-{created // 60}"
            cron = self._controller(
                "CronJob", "batch/v1", w, w.name, base, {
                    "concurrencyPolicy": "Forbid", "failedJobsHistoryLimit": 1,
                    "jobTemplate": {"metadata": {}, "spec": {
                        "backoffLimit": 2, "parallelism": n,
                        "template": self._template(self._prepare(w, {**base, **w.labels}))}},
                    "schedule": w.schedule, "successfulJobsHistoryLimit": 3,
                    "suspend": False},
                {"lastScheduleTime": ts(created)})
        job_uid = self.ids.uid()
        job_labels = {"batch.kubernetes.io/controller-uid": job_uid,
                      "batch.kubernetes.io/job-name": job_name, "controller-uid": job_uid,
                      "job-name": job_name}
        prep = self._prepare(w, {**base, **w.labels, **job_labels})
        job = self._controller(
            "Job", "batch/v1", w, job_name, {**base, **job_labels}, {
                "backoffLimit": 2, "completionMode": "NonIndexed", "completions": n,
                "manualSelector": False, "parallelism": n,
                "podReplacementPolicy": "TerminatingOrFailed",
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": job_uid}},
                "suspend": False, "template": self._template(prep)},
            {"active": ready, "ready": ready, "startTime": ts(created + 1),
             "succeeded": sum(1 for v in phases.values() if v == "Succeeded"),
             "terminating": 0, "uncountedTerminatedPods": {}},
            self._ref(cron) if cron else None, created=created)
        job["metadata"]["uid"] = job_uid  # the controller-uid labels must name the Job
        if cron:
            cron["status"]["active"] = [{"apiVersion": "batch/v1", "kind": "Job",
                                         "name": job_name, "namespace": w.namespace,
                                         "uid": job_uid}]
        prep.owner = self._ref(job)
        return prep, [self._generated(w.namespace, job_name) for _ in range(n)], created

    def _pod(self, w: Workload, prep: _Prepared, name: str, node: str | None,
             labels: Mapping[str, str] | None, phase: str, claim_volumes: list[JSON],
             owner: list[JSON] | None = None, annotations: Mapping[str, str] | None = None
             ) -> JSON:
        """Stamp one pod out of the template, adding what admission and the scheduler add."""
        ids = self.ids
        spec = _copy(prep.spec)
        token = f"kube-api-access-{ids.suffix()}"
        mount = {"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": token,
                 "readOnly": True}
        for c in spec["containers"]:
            c.setdefault("volumeMounts", []).append(dict(mount))
        for c in spec.get("initContainers", ()):
            c.setdefault("volumeMounts", []).append(dict(mount))
        for v in claim_volumes:
            spec["containers"][0].setdefault("volumeMounts", []).insert(
                0, {"mountPath": next((c.mount for c in w.claims if c.name == v["name"]),
                                      "/data"), "name": v["name"]})
        spec["volumes"][:0] = claim_volumes
        spec["volumes"].append(_token_volume(token))
        spec["enableServiceLinks"] = True
        if node:
            spec["nodeName"] = node
        spec["preemptionPolicy"] = "PreemptLowerPriority"
        spec["priority"] = PRIORITIES.get(w.priority_class, 0)
        spec["serviceAccount"] = w.service_account
        if w.kind == "DaemonSet" and node:
            spec["affinity"] = {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In",
                                      "values": [node]}]}]}}}
            spec["tolerations"] = spec.get("tolerations", []) + [
                dict(t) for t in _DAEMONSET_TOLERATIONS]
        elif w.kind == "StatefulSet":
            spec["hostname"] = name
            spec["subdomain"] = w.name
            spec["tolerations"] = spec.get("tolerations", []) + [
                dict(t) for t in _DEFAULT_TOLERATIONS]
        else:
            spec["tolerations"] = spec.get("tolerations", []) + [
                dict(t) for t in _DEFAULT_TOLERATIONS]
        pod_labels = dict(prep.labels)
        if w.kind == "StatefulSet":
            pod_labels["apps.kubernetes.io/pod-index"] = name.rsplit("-", 1)[1]
            pod_labels["statefulset.kubernetes.io/pod-name"] = name
        if labels:
            pod_labels.update(labels)
        created = w.created
        if node:
            created = max(created, self.node_created[node] + 90)
        created += ids.rng.randrange(0, 3600)
        created = min(created, self.now - 60)
        meta = self._meta(name, created, w.namespace, pod_labels,
                          annotations or w.annotations or None)
        refs = owner or [dict(r) for r in prep.owner]  # bare pods have none
        if refs:
            meta["ownerReferences"] = refs
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
               "status": self._pod_status(w, spec, prep, node, phase, created)}
        self.kinds["Pod"].append(pod)
        self._ns_pods.setdefault(w.namespace, []).append(pod)
        if "app" in pod_labels:
            self._app_pods.setdefault((w.namespace, pod_labels["app"]), []).append(pod)
        return pod

    def _pod_status(self, w: Workload, spec: JSON, prep: _Prepared, node: str | None,
                    phase: str, created: int) -> JSON:
        if not node or phase == "Pending":
            n = len(self.kinds["Node"])
            return {"conditions": [{
                "lastProbeTime": None, "lastTransitionTime": ts(created),
                "message": f"0/{n} nodes are available: {n} Insufficient cpu. preemption: "
                           f"0/{n} nodes are available: {n} No preemption victims found for "
                           "incoming pod.",
                "reason": "Unschedulable", "status": "False", "type": "PodScheduled"}],
                "phase": "Pending", "qosClass": prep.qos}
        started = ts(created + 4)
        host_ip = self._node_ip[node]
        pod_ip = host_ip if w.host_network else self._pod_subnet[node].allocate()
        done = phase in ("Succeeded", "Failed")
        ok = "False" if done else "True"
        conditions = [{"lastProbeTime": None, "lastTransitionTime": started,
                       "status": "False" if done and t not in ("Initialized", "PodScheduled")
                       else "True", "type": t}
                      for t in ("PodReadyToStartContainers", "Initialized", "Ready",
                                "ContainersReady", "PodScheduled")]
        for c in conditions:
            if c["status"] == "False":
                c["reason"] = "PodCompleted"
        ids = self.ids
        statuses = []
        for c in spec["containers"]:
            state: JSON = ({"terminated": {"containerID": "", "exitCode": 0,
                                           "finishedAt": ts(created + 300),
                                           "reason": "Completed", "startedAt": started}}
                           if done else {"running": {"startedAt": started}})
            cid = ids.container_id()
            if done:
                state["terminated"]["containerID"] = cid
            statuses.append({"containerID": cid, "image": c["image"],
                             "imageID": f"{c['image'].rsplit(':', 1)[0]}@"
                                        f"{prep.digests.get(c['image'], '')}",
                             "lastState": {}, "name": c["name"], "ready": ok == "True",
                             "restartCount": 0, "started": ok == "True", "state": state})
        status: JSON = {"conditions": conditions, "containerStatuses": statuses,
                        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}]}
        if "initContainers" in spec:
            status["initContainerStatuses"] = [
                {"containerID": ids.container_id(), "image": c["image"],
                 "imageID": f"{c['image'].rsplit(':', 1)[0]}@"
                            f"{prep.digests.get(c['image'], '')}",
                 "lastState": {}, "name": c["name"], "ready": True, "restartCount": 0,
                 "started": False, "state": {"terminated": {
                     "exitCode": 0, "finishedAt": started, "reason": "Completed",
                     "startedAt": ts(created + 1)}}}
                for c in spec["initContainers"]]
        status.update({"phase": phase, "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                       "qosClass": prep.qos, "startTime": ts(created + 1)})
        return status

    def add_static_pod(self, node: str, namespace: str, base: str,
                       container: ContainerSpec, volumes: tuple[JSON, ...] = ()) -> str:
        """A kubelet static pod; the API shows its mirror pod, owned by the Node."""
        name = f"{base}-{node}"
        self._reserve(namespace, [name])
        w = Workload(namespace, base, "Pod", containers=(container,), volumes=volumes,
                     host_network=True, priority_class="system-node-critical",
                     labels={"tier": "node"}, created=self.node_created[node])
        prep = self._prepare(w, {"component": base, "tier": "node"})
        config_hash = self.ids.hex(32)
        owner = [{"apiVersion": "v1", "controller": True, "kind": "Node", "name": node,
                  "uid": self._node_uid[node]}]
        self._pod(w, prep, name, node, None, "Running", [], owner, annotations={
            "kubernetes.io/config.hash": config_hash,
            "kubernetes.io/config.mirror": config_hash,
            "kubernetes.io/config.seen": ts(self.node_created[node] + 30),
            "kubernetes.io/config.source": "file"})
        return name

    def add_pdb(self, namespace: str, name: str, match_labels: Mapping[str, str], *,
                min_available: int | str | None = None,
                max_unavailable: int | str | None = None) -> JSON:
        """Add a PodDisruptionBudget whose status is computed from the pods added so far,
        the way the disruption controller computes it (healthy = Running on a node)."""
        app = match_labels.get("app")
        candidates = self._app_pods.get((namespace, app), []) if app else \
            self._ns_pods.get(namespace, [])
        pods = [p for p in candidates
                if all(p["metadata"].get("labels", {}).get(k) == v
                        for k, v in match_labels.items())]
        expected = len(pods)
        healthy = sum(1 for p in pods if p["status"]["phase"] == "Running")

        def count(v: int | str) -> int:
            if isinstance(v, str) and v.endswith("%"):
                return math.ceil(expected * int(v[:-1]) / 100)
            return int(v)

        spec: JSON = {"selector": {"matchLabels": dict(match_labels)}}
        if min_available is not None:
            spec["minAvailable"] = min_available
            desired = count(min_available)
        else:
            spec["maxUnavailable"] = max_unavailable if max_unavailable is not None else 1
            desired = max(0, expected - count(spec["maxUnavailable"]))
        allowed = max(0, healthy - desired)
        meta = self._meta(name, self.now - 60 * DAY, namespace)
        meta["generation"] = 1
        pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
               "spec": spec, "status": {
                   "conditions": [{"lastTransitionTime": ts(self.now - 3600),
                                   "message": "", "observedGeneration": 1,
                                   "reason": "SufficientPods" if allowed else
                                   "InsufficientPods",
                                   "status": "True" if allowed else "False",
                                   "type": "DisruptionAllowed"}],
                   "currentHealthy": healthy, "desiredHealthy": desired,
                   "disruptionsAllowed": allowed, "expectedPods": expected,
                   "observedGeneration": 1}}
        self.kinds["PodDisruptionBudget"].append(pdb)
        return pdb

    def cluster_info(self) -> JSON:
        return {"apiVersion": "livepolicy.io/v1alpha1", "kind": "ClusterInfo",
                "metadata": {"name": self.name}, "spec": {
                    "platform": self.platform, "kubernetesVersion": self.kubernetes_version,
                    "region": self.region,
                    "observedAt": ts(self.now),
                    "networking": {"prefixDelegation": self.prefix_delegation},
                    "subnets": [s.info() for s in self.subnets]}}

    def snapshot(self) -> JSON:
        """The List kubectl prints (kinds in the order of the get command, each sorted by
        namespace and name), followed by the ClusterInfo object."""
        items: list[JSON] = []
        for objs in self.kinds.values():
            objs.sort(key=lambda o: (o["metadata"].get("namespace", ""),
                                     o["metadata"]["name"]))
            items.extend(objs)
        items.append(self.cluster_info())
        return {"apiVersion": "v1", "items": items, "kind": "List",
                "metadata": {"resourceVersion": ""}}


# ---------------------------------------------------------------------------- generate()

_WORDS_A = ("cart", "catalog", "checkout", "search", "profile", "billing", "auth", "session",
            "inventory", "pricing", "shipping", "ledger", "orders", "reviews", "ads",
            "ranking", "media", "notify", "payments", "identity", "geo", "feed", "loyalty",
            "quote", "tax", "fraud", "returns", "wishlist", "coupon", "events")
_WORDS_B = ("api", "web", "worker", "gateway", "cache", "indexer", "consumer", "producer",
            "sync", "scheduler", "exporter", "proxy", "router", "store", "bridge", "reader",
            "writer", "service", "engine", "agent")
_NAMESPACES = ("shop", "payments", "search", "identity", "ads", "catalog", "checkout",
               "growth", "platform", "data", "media", "fulfilment", "risk", "support")
_STATEFUL_IMAGES = ("redis:7.2.5", "postgres:16.4", "bitnami/kafka:3.8.0", "mongo:7.0.14",
                    "rabbitmq:3.13.7-management",
                    "docker.elastic.co/elasticsearch/elasticsearch:8.15.2",
                    "bitnami/zookeeper:3.9.2", "memcached:1.6.31")
_CPU = ("25m", "50m", "50m", "100m", "100m", "100m", "150m", "200m", "250m", "500m")
_MEM = ("64Mi", "96Mi", "128Mi", "128Mi", "192Mi", "256Mi", "256Mi", "384Mi", "512Mi", "1Gi")
_SIDECAR = ContainerSpec("envoy", "public.ecr.aws/envoyproxy/envoy:v1.31.2", "50m", "64Mi",
                         ports=(("admin", 9901),))
_INIT = ContainerSpec("wait-for-deps", "public.ecr.aws/docker/library/busybox:1.36.1", "10m",
                      "16Mi", args=("sh", "-c", "until nslookup db; do sleep 2; done"))
_MAX_FILL = 0.85  # no node's requests above this share of allocatable: room to migrate into
_AVG_CPU, _AVG_MEM = 0.165, 0.32  # cores / GiB per workload pod, sidecars included


def eks_daemonsets() -> list[Workload]:
    """The per-node agents of an EKS node (VPC CNI, kube-proxy, EBS CSI, node-exporter)."""
    return [
        Workload("kube-system", "aws-node", "DaemonSet", containers=(
            ContainerSpec("aws-node", f"602401143452.dkr.ecr.{REGION}.amazonaws.com/"
                          "amazon-k8s-cni:v1.19.2-eksbuild.1", "25m", "64Mi",
                          memory_limit=None, ports=(("metrics", 61678),),
                          mounts=(("cni-bin-dir", "/host/opt/cni/bin"),
                                  ("xtables-lock", "/run/xtables.lock"))),
            ContainerSpec("aws-eks-nodeagent", f"602401143452.dkr.ecr.{REGION}.amazonaws.com/"
                          "amazon/aws-network-policy-agent:v1.1.6-eksbuild.1", "25m", "64Mi",
                          memory_limit=None, privileged=True)),
            init_containers=(ContainerSpec(
                "aws-vpc-cni-init", f"602401143452.dkr.ecr.{REGION}.amazonaws.com/"
                "amazon-k8s-cni-init:v1.19.2-eksbuild.1", "25m", "32Mi", memory_limit=None,
                privileged=True),),
            volumes=(host_path_volume("cni-bin-dir", "/opt/cni/bin", ""),
                     host_path_volume("xtables-lock", "/run/xtables.lock", "FileOrCreate")),
            tolerations=TOLERATE_ALL, priority_class="system-node-critical",
            host_network=True, service_account="aws-node", created=NOW - 400 * DAY),
        Workload("kube-system", "kube-proxy", "DaemonSet", containers=(
            ContainerSpec("kube-proxy", f"602401143452.dkr.ecr.{REGION}.amazonaws.com/"
                          "eks/kube-proxy:v1.31.3-minimal-eksbuild.2", "100m", "64Mi",
                          memory_limit=None, privileged=True,
                          mounts=(("lib-modules", "/lib/modules"),)),),
            volumes=(host_path_volume("lib-modules", "/lib/modules", ""),),
            tolerations=TOLERATE_ALL, priority_class="system-node-critical",
            host_network=True, service_account="kube-proxy", created=NOW - 400 * DAY),
        Workload("kube-system", "ebs-csi-node", "DaemonSet", containers=(
            ContainerSpec("ebs-plugin", "public.ecr.aws/ebs-csi-driver/aws-ebs-csi-driver:"
                          "v1.38.1", "10m", "40Mi", memory_limit="256Mi", privileged=True,
                          mounts=(("kubelet-dir", "/var/lib/kubelet"),)),
            ContainerSpec("node-driver-registrar", "public.ecr.aws/eks-distro/kubernetes-csi/"
                          "node-driver-registrar:v2.12.0-eks-1-31-9", "10m", "40Mi",
                          memory_limit="256Mi"),
            ContainerSpec("liveness-probe", "public.ecr.aws/eks-distro/kubernetes-csi/"
                          "livenessprobe:v2.14.0-eks-1-31-9", "10m", "40Mi",
                          memory_limit="256Mi")),
            volumes=(host_path_volume("kubelet-dir", "/var/lib/kubelet"),),
            tolerations=TOLERATE_ALL, priority_class="system-node-critical",
            service_account="ebs-csi-node-sa", created=NOW - 300 * DAY),
        Workload("monitoring", "node-exporter", "DaemonSet", containers=(
            ContainerSpec("node-exporter", "quay.io/prometheus/node-exporter:v1.8.2", "50m",
                          "64Mi", ports=(("metrics", 9100),),
                          mounts=(("proc", "/host/proc"), ("sys", "/host/sys"))),),
            volumes=(host_path_volume("proc", "/proc"), host_path_volume("sys", "/sys")),
            tolerations=TOLERATE_ALL, host_network=True, service_account="node-exporter",
            created=NOW - 200 * DAY),
    ]


def pod_requests(w: Workload) -> tuple[int, int]:
    """(millicores, MiB) one pod of `w` requests, the scheduler's way (init = max)."""
    def mc(q: str) -> int:
        return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)

    def mib(q: str) -> int:
        for unit, scale in (("Ki", 1 / 1024), ("Mi", 1), ("Gi", 1024), ("Ti", 1024**2)):
            if q.endswith(unit):
                return math.ceil(float(q[:-2]) * scale)
        return math.ceil(float(q) / 2**20)

    cpu = sum(mc(c.cpu) for c in w.containers)
    mem = sum(mib(c.memory) for c in w.containers)
    for c in w.init_containers:
        cpu, mem = max(cpu, mc(c.cpu)), max(mem, mib(c.memory))
    return cpu, mem


class _Synth:
    """One run of `generate`: layout, nodes, daemon sets, then workloads into free slots."""

    def __init__(self, nodes: int, pods_per_node: int, seed: int, variety: bool) -> None:
        if nodes < 1:
            raise ValueError("nodes must be at least 1")
        if pods_per_node < 0:
            raise ValueError("pods_per_node must not be negative")
        self.n, self.k, self.variety = nodes, pods_per_node, variety
        self.b = ClusterBuilder(f"synth-{nodes}x{pods_per_node}-s{seed}", seed=seed)
        self.rng = self.b.rng
        self.ds = eks_daemonsets()[: min(4, pods_per_node // 6)] if variety else []
        self.nodes: list[str] = []
        self.tainted: set[str] = set()
        self.names: dict[str, int] = {}
        self.room: dict[str, list[int]] = {}  # node -> [millicores, MiB] left below the cap

    # -- layout ----------------------------------------------------------------------------
    def _prefix(self, addresses: int) -> int:
        return max(16, min(28, 32 - math.ceil(math.log2(addresses * 1.25 + 16))))

    def _subnets(self) -> dict[str, list[Subnet]]:
        """Three zones; with variety, us-east-1c uses custom networking (ENIConfig named
        after the zone, pod IPs from 100.64.0.0/10) and the others standard networking."""
        b, zones = self.b, ("us-east-1a", "us-east-1b", "us-east-1c")
        per_zone = math.ceil(self.n / 3)
        out: dict[str, list[Subnet]] = {}
        vpc, cgnat = 10 << 24, 100 << 24 | 64 << 16
        for zone in zones:
            custom = self.variety and zone == "us-east-1c"
            need = per_zone * (1 if custom else self.k + 1)
            count = max(2 if self.variety and not custom else 1, math.ceil(need / 50_000))
            prefix = self._prefix(math.ceil(need / count))
            out[zone] = []
            for _ in range(count):
                cidr = f"{ipaddress.IPv4Address(vpc)}/{prefix}"
                vpc += 1 << (32 - prefix)
                out[zone].append(b.add_subnet(zone, cidr))
            if custom:
                prefix = max(10, min(28, 32 - math.ceil(math.log2(per_zone * self.k * 1.25
                                                                  + 16))))
                pods = b.add_subnet(zone, f"{ipaddress.IPv4Address(cgnat)}/{prefix}",
                                    for_pods=True)
                b.add_eniconfig(zone, pods)
        return out

    def _size(self, family: str) -> str:
        """Smallest size of `family` expected to hold the pods at <= 65% CPU and memory
        (sometimes one size up, as real clusters mix sizes)."""
        ds_cpu = sum(pod_requests(w)[0] for w in self.ds) / 1000
        ds_mem = sum(pod_requests(w)[1] for w in self.ds) / 1024
        slots = self.k - len(self.ds)
        cpu = ds_cpu + slots * _AVG_CPU
        mem = ds_mem + slots * _AVG_MEM
        sizes = [f"{family}.{s}" for s in _FAMILIES[family][2]]
        fits = [s for s in sizes if INSTANCE_TYPES[s].max_pods >= self.k
                and INSTANCE_TYPES[s].allocatable_cpu_millis * 0.65 >= cpu * 1000
                and INSTANCE_TYPES[s].allocatable_memory_ki * 0.65 >= mem * 1024 * 1024]
        if not fits:
            return sizes[-1]
        i = sizes.index(fits[0])
        if i + 1 < len(sizes) and self.rng.random() < 0.3:
            return sizes[i + 1]
        return fits[0]

    def make_nodes(self) -> None:
        b, rng, n = self.b, self.rng, self.n
        subnets = self._subnets()
        zones = list(subnets)
        special: dict[int, str] = {}
        if self.variety:
            quota = (("nodegroup", 0.03), ("karpenter", 0.02), ("al2", 0.01),
                     ("bottlerocket", 0.005), ("containerd17", 0.02), ("notready", 0.005),
                     ("cordoned", 0.02), ("batch", 0.04))
            counts = [(kind, max(1 if n >= 20 else 0, round(p * n))) for kind, p in quota]
            total = min(n, sum(c for _, c in counts))
            picks = rng.sample(range(n), total)
            for kind, c in counts:
                for i in picks[:c]:
                    special[i] = kind
                picks = picks[c:]
        families = (("m5", 18), ("c5", 12), ("r5", 8), ("m6i", 10), ("c6i", 6), ("r6i", 4),
                    ("m6g", 12), ("c6g", 8), ("r6g", 5), ("m7i", 5), ("m6a", 4), ("m5a", 3),
                    ("c3", 2), ("m3", 1)) if self.variety else (("m5", 5), ("c5", 3), ("r5", 2))
        fam_names = [f for f, _ in families]
        fam_weights = [w for _, w in families]
        for i in range(n):
            zone = zones[i % len(zones)]
            subnet = subnets[zone][(i // len(zones)) % len(subnets[zone])]
            kind = special.get(i, "")
            fam = rng.choices(fam_names, fam_weights)[0]
            if kind == "batch":
                fam = "c5"
            itype = self._size(fam)
            age = rng.choice((2, 5, 9, 14, 21, 30, 45, 60)) if rng.random() < 0.9 else \
                rng.choice((120, 180, 260))
            created = NOW - age * DAY - rng.randrange(DAY)
            arch = INSTANCE_TYPES[itype].arch
            cpu = ""
            if self.variety:
                gen = "".join(ch for ch in fam if ch.isdigit())
                if arch == "arm64":
                    cpu = "graviton2"
                elif fam in ("m5", "c5", "r5"):
                    cpu = "cascadelake" if rng.random() < 0.6 else "skylake"
                elif gen == "6" and not fam.endswith("a"):
                    cpu = "icelake"
                elif gen == "7":
                    cpu = "sapphirerapids"
            custom = zone == "us-east-1c" and self.variety
            kwargs: dict[str, Any] = {
                "created": created, "cpu": cpu, "spot": rng.random() < 0.25,
                "eniconfig": zone if custom else "",
                "custom_network": custom and rng.random() < 0.9,
                "template": "batch" if kind == "batch" else
                ("arm64-general" if arch == "arm64" else "default-by-castai")}
            if kind == "nodegroup":
                kwargs.update(managed=False, nodegroup="system", spot=False)
            elif kind == "karpenter":
                kwargs.update(managed=False, karpenter_pool="default")
            elif kind == "al2":
                kwargs.update(os_image=AL2_IMAGE, runtime=CONTAINERD_17)
            elif kind == "bottlerocket":
                kwargs.update(os_image=BOTTLEROCKET_IMAGE, runtime=CONTAINERD_BOTTLEROCKET)
            elif kind == "containerd17":
                kwargs.update(runtime=CONTAINERD_17)
            elif kind == "notready":
                kwargs.update(ready=False)
            elif kind == "cordoned":
                kwargs.update(unschedulable=True, labels={DRAIN: "true"})
            elif kind == "batch":
                kwargs.update(taints=(("dedicated", "batch", "NoSchedule"),),
                              labels={"workload-class": "batch"})
            name = b.add_node(itype, subnet, **kwargs)
            self.nodes.append(name)
            if kind == "batch":
                self.tainted.add(name)

    # -- workloads -------------------------------------------------------------------------
    def _name(self, ns: str) -> str:
        base = f"{self.rng.choice(_WORDS_A)}-{self.rng.choice(_WORDS_B)}"
        key = f"{ns}/{base}"
        self.names[key] = self.names.get(key, 0) + 1
        # "-v2", not "-2": a StatefulSet's pods are named <name>-<ordinal>
        return base if self.names[key] == 1 else f"{base}-v{self.names[key]}"

    def _containers(self, ns: str, name: str, sidecar: bool, image: str = "") -> tuple[
            ContainerSpec, ...]:
        rng = self.rng
        img = image or f"{ECR}/{ns}/{name}:{rng.randrange(1, 4)}.{rng.randrange(60)}." \
                       f"{rng.randrange(20)}"
        mounts = (("config", "/etc/app"),)
        main = ContainerSpec("app", img, rng.choice(_CPU), rng.choice(_MEM),
                             ports=(("http", 8080),), mounts=mounts)
        return (main, _SIDECAR) if sidecar else (main,)

    def _workload(self, ns: str, kind: str, batch: bool) -> tuple[Workload, int]:
        """A random workload of `kind` and its replica count."""
        rng, v = self.rng, self.variety
        name = self._name(ns)
        sidecar = v and not batch and rng.random() < 0.25
        image = rng.choice(_STATEFUL_IMAGES) if kind == "StatefulSet" else ""
        containers = self._containers(ns, name, sidecar, image)
        vols: list[JSON] = [config_map_volume("config", f"{name}-config")]
        if v:
            r = rng.random()
            if rng.random() < 0.5:
                vols.append(secret_volume("credentials", f"{name}-credentials"))
            if rng.random() < 0.3:
                vols.append(empty_dir_volume("tmp", "Memory" if rng.random() < 0.2 else ""))
            if rng.random() < 0.05:
                vols.append(downward_api_volume("podinfo"))
            if rng.random() < 0.03:
                vols.append(csi_inline_volume("secrets-store", "secrets-store.csi.k8s.io",
                                              {"secretProviderClass": f"{name}-aws"}))
            if rng.random() < 0.02:
                vols.append(nfs_volume("shared", "10.20.250.10", f"/exports/{ns}"))
            if batch and rng.random() < 0.2:
                vols.append(ephemeral_volume("scratch", "50Gi"))
            if r < 0.005:
                vols.append(host_path_volume("host-logs", "/var/log"))
        labels: dict[str, str] = {}
        if v and rng.random() < 0.01:
            labels[OPT_OUT] = "true"
        if v and rng.random() < 0.02:
            labels[REMOVAL_DISABLED] = "true"
        if v and kind == "Pod" and rng.random() < 0.3:
            containers = (ContainerSpec("shell", "nicolaka/netshoot:v0.13", "50m", "64Mi",
                                        tty=True, stdin=True),)
        elif v and rng.random() < 0.003:
            containers = (ContainerSpec(containers[0].name, containers[0].image,
                                        containers[0].cpu, containers[0].memory, tty=True,
                                        stdin=True, mounts=containers[0].mounts),
                          *containers[1:])
        w = Workload(ns, name, kind, containers=containers, volumes=tuple(vols), labels=labels,
                     created=NOW - rng.randrange(3, 300) * DAY)
        if v and rng.random() < 0.15:
            w.init_containers = (_INIT,)
        if v and rng.random() < 0.2:
            w.node_selector = {"kubernetes.io/os": "linux"}
        if v and rng.random() < 0.05:
            w.affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/arch", "operator": "In",
                     "values": ["amd64", "arm64"]}]}]}}}
        if batch:
            w.tolerations = (toleration("dedicated", "batch"),)
            w.node_selector = {}
            w.priority_class = "batch-low" if v else ""
        elif v and rng.random() < 0.05:
            w.priority_class = "business-critical"
        if kind == "StatefulSet":
            storage = "ebs" if not v or rng.random() < 0.9 else rng.choice(("local",
                                                                             "ebs-intree"))
            w.claims = (ClaimTemplate("data", "/data", rng.choice(("10Gi", "20Gi", "50Gi")),
                                      storage),)
            return w, rng.choice((1, 2, 3, 3, 3, 5))
        if kind == "Deployment" and v and rng.random() < 0.03:
            claim = self.b.add_claim(ns, f"{name}-shared", storage="efs", size="100Gi",
                                     created=w.created)
            w.volumes = (*w.volumes, pvc_volume("shared-files", claim))
        if kind in ("Job", "CronJob"):
            w.schedule = rng.choice(("*/15 * * * *", "0 * * * *", "30 2 * * *"))
            return w, rng.choice((1, 1, 2, 4))
        if kind == "Pod":
            return w, 1
        if kind in ("Rollout", "ReplicaSet"):
            return w, rng.choice((2, 3, 4, 6))
        return w, rng.choice((1, 2, 2, 3, 3, 3, 4, 5, 6, 8, 10, 12, 16, 24))

    def make_pods(self) -> None:
        b, rng, k = self.b, self.rng, self.k
        for nd in self.nodes:
            it = b.node_type[nd]
            self.room[nd] = [int(it.allocatable_cpu_millis * _MAX_FILL),
                             int(it.allocatable_memory_ki / 1024 * _MAX_FILL)]
        for w in self.ds:
            b.add_workload(w, self.nodes)
            cpu, mem = pod_requests(w)
            for nd in self.nodes:
                self.room[nd][0] -= cpu
                self.room[nd][1] -= mem
        free = k - len(self.ds)
        tainted_slots = [nd for nd in self.nodes if nd in self.tainted for _ in range(free)]
        open_slots = [nd for nd in self.nodes if nd not in self.tainted for _ in range(free)]
        rng.shuffle(tainted_slots)
        rng.shuffle(open_slots)
        n_ns = max(3, min(len(_NAMESPACES) * 8, len(open_slots) // 1500))
        namespaces = [(_NAMESPACES[i] if i < len(_NAMESPACES) else f"team-{i:03d}")
                      for i in range(n_ns)]
        v = self.variety
        static_left = max(1, self.n // 200) if v and free > 0 else 0
        if static_left:
            for nd in self.nodes[:static_left]:
                if nd in self.tainted:
                    tainted_slots.remove(nd)
                else:
                    open_slots.remove(nd)
                b.add_static_pod(nd, "kube-system", "registry-mirror", ContainerSpec(
                    "registry", "public.ecr.aws/docker/library/registry:2.8.3", "50m",
                    "64Mi"), (host_path_volume("cache", "/var/lib/registry-mirror",
                                               "DirectoryOrCreate"),))
        # Batch pods fill the tainted nodes first (they tolerate dedicated=batch) and spill
        # over; service pods only use untainted nodes.
        batch_target = len(tainted_slots) + (round(0.03 * len(open_slots)) if v else 0)
        placed_batch = 0
        while tainted_slots or (open_slots and placed_batch < batch_target):
            kind = rng.choice(("Job", "CronJob", "CronJob"))
            w, reps = self._workload("batch" if rng.random() < 0.7 else rng.choice(
                namespaces), kind, True)
            need = pod_requests(w)
            place: list[str | None] = []
            for _ in range(reps):
                pool = tainted_slots or open_slots
                if not pool:
                    break
                place.append(self._take(pool, need))
            self._add(w, place)
            placed_batch += len(place)
        kinds = (("Deployment", 70), ("StatefulSet", 12), ("Rollout", 3), ("ReplicaSet", 1),
                 ("Pod", 2)) if v else (("Deployment", 85), ("StatefulSet", 15))
        names = [x for x, _ in kinds]
        weights = [x for _, x in kinds]
        while open_slots:
            kind = rng.choices(names, weights)[0]
            w, reps = self._workload(rng.choice(namespaces), kind, False)
            need = pod_requests(w)
            place = [self._take(open_slots, need) for _ in range(min(reps, len(open_slots)))]
            self._add(w, place)
            if v and kind == "Deployment" and len(place) >= 3 and rng.random() < 0.25:
                if rng.random() < 0.5:
                    b.add_pdb(w.namespace, w.name, {"app": w.name}, max_unavailable=1)
                else:
                    b.add_pdb(w.namespace, w.name, {"app": w.name},
                              min_available=rng.choice((1, "50%", len(place))))

    def _take(self, pool: list[str], need: tuple[int, int]) -> str | None:
        """Pop a free slot whose node still has room for `need` (millicores, MiB) below
        _MAX_FILL, trying random other slots when the next one is too full; when none of
        them fits, the roomiest one tried."""
        rng, room = self.rng, self.room
        best, best_spare = len(pool) - 1, -(10**12)
        for attempt in range(30):
            i = len(pool) - 1 if attempt == 0 else rng.randrange(len(pool))
            left = room[pool[i]]
            spare = min(left[0] - need[0], (left[1] - need[1]) // 2)
            if spare > best_spare:
                best, best_spare = i, spare
            if spare >= 0:
                break
        pool[best], pool[-1] = pool[-1], pool[best]
        node = pool.pop()
        room[node][0] -= need[0]
        room[node][1] -= need[1]
        return node

    def _add(self, w: Workload, place: list[str | None]) -> None:
        """Add with per-pod variety: Pending pods, finished Job pods, migration labels."""
        rng, v = self.rng, self.variety
        phases: dict[int, str] = {}
        labels: dict[int, dict[str, str]] = {}
        if v:
            for i in range(len(place)):
                if rng.random() < 0.002:
                    place[i] = None
                elif w.kind == "CronJob" and rng.random() < 0.2:
                    phases[i] = "Succeeded"
                elif rng.random() < 0.35:
                    labels[i] = {MIGRATION_ENABLED: "true"}
        self.b.add_workload(w, place, labels, phases)


def generate(nodes: int, pods_per_node: int, seed: int = 0, *, variety: bool = True
             ) -> dict[str, Any]:
    """A snapshot List with `nodes` Nodes and exactly `nodes * pods_per_node` Pods.

    With `variety` (the default) the cluster mixes what rules must tell apart: three zones
    (us-east-1c on custom networking through a zone-named ENIConfig), amd64 and arm64,
    several generation sets (c3/m3 up to m7i), CPU-feature labels with two CPU models behind
    m5/c5/r5, a few nodes that fail node rules (unmanaged, AL2, Bottlerocket, containerd
    1.7, NotReady), cordoned and old nodes to drain, batch nodes tainted
    dedicated=batch:NoSchedule; four DaemonSets (when pods_per_node >= 24), every owner kind,
    every volume kind, and rare pods that trip pod rules (tty, hostPath, opt-out, Pending).
    Without it, every node passes the node rules (m5/c5/r5 only, standard networking) and
    every pod is a Deployment or StatefulSet pod with supported volumes: the largest
    compatibility graph for a given size.

    Requests are sized so that no node is above ~60% of its allocatable CPU or memory, so
    there is room to place migrated pods. Same arguments, same output, on any machine.
    """
    enabled = gc.isenabled()
    gc.disable()  # millions of acyclic dicts: the cyclic collector only costs time here
    try:
        s = _Synth(nodes, pods_per_node, seed, variety)
        s.make_nodes()
        s.make_pods()
        return s.b.snapshot()
    finally:
        if enabled:
            gc.enable()


# ---------------------------------------------------------------------------- CLI

def dump_yaml(data: Any, stream: Any) -> None:
    """Block-style YAML as kubectl prints it: keys sorted, nulls spelled out, long lines
    kept whole, and never an anchor/alias (kubectl has none; each pod owns its tree)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.representer.ignore_aliases = lambda *_: True
    yaml.dump(data, stream)


def write(snapshot: Mapping[str, Any], path: Path | None, fmt: str) -> None:
    """JSON through orjson (fast: the benchmark format) or YAML through ruamel.yaml (pure
    Python here, ~150 kB/s: fine for examples, slow for 150,000 pods)."""
    out = sys.stdout.buffer if path is None else path.open("wb")
    try:
        if fmt == "json":
            out.write(orjson.dumps(snapshot))
            out.write(b"\n")
        else:
            dump_yaml(snapshot, out)
    finally:
        if path is not None:
            out.close()


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.synth", description=(
        "Write a deterministic synthetic EKS snapshot (kubectl List + ClusterInfo)."))
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--pods-per-node", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("json", "yaml"), default="json")
    p.add_argument("--uniform", action="store_true",
                   help="no variety: every node passes the node rules, every pod the pod rules")
    p.add_argument("-o", "--output", type=Path, default=None, help="file (default: stdout)")
    args = p.parse_args(None if argv is None else list(argv))
    started = time.perf_counter()
    snap = generate(args.nodes, args.pods_per_node, args.seed, variety=not args.uniform)
    built = time.perf_counter()
    write(snap, args.output, args.format)
    done = time.perf_counter()
    if args.output is not None:
        print(f"{args.output}: {args.nodes} nodes, {args.nodes * args.pods_per_node} pods, "
              f"{len(snap['items'])} objects, {args.output.stat().st_size / 1e6:.1f} MB; "
              f"generate {built - started:.1f}s, write {done - built:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
