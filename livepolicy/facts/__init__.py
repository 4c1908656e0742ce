"""Cluster facts: a frozen, compact picture of the cluster that rules and the planner read.

Sources (snapshot file, Kubernetes API, AWS, lab) all produce the same `ClusterFacts`.
"""

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
)

__all__ = [
    "ClusterFacts",
    "ClusterInfo",
    "ContainerFacts",
    "NodeFacts",
    "OwnerKind",
    "PdbFacts",
    "PodFacts",
    "SubnetFacts",
    "Taint",
    "Toleration",
    "VolumeFacts",
    "VolumeKind",
]
