"""Small value helpers and key constants shared by the Kubernetes-object converters.

Split from kubeobjects so the pod and node converters read the same tolerant accessors
(`_map`, `_list`, ...) and label keys without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from livepolicy.core.quantity import bytes_of, cpu_millis
from livepolicy.facts.model import OwnerKind, VolumeKind

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
    if text.startswith("debian"):
        return "FAMILY_DEBIAN"
    return "FAMILY_OTHER" if text else ""
