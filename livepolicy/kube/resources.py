"""The API resources livepolicy reads and writes, and their REST paths."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    kind: str
    api_version: str  # "v1", "apps/v1", "crd.k8s.amazonaws.com/v1alpha1"
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(self, namespace: str | None = None, name: str = "") -> str:
        """Collection path (all namespaces when `namespace` is None) or object path."""
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        ns = f"/namespaces/{_q(namespace)}" if self.namespaced and namespace else ""
        return f"{root}{ns}/{self.plural}" + (f"/{_q(name)}" if name else "")


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


NODES = Resource("Node", "v1", "nodes", namespaced=False)
PODS = Resource("Pod", "v1", "pods")
PVCS = Resource("PersistentVolumeClaim", "v1", "persistentvolumeclaims")
PVS = Resource("PersistentVolume", "v1", "persistentvolumes", namespaced=False)
PDBS = Resource("PodDisruptionBudget", "policy/v1", "poddisruptionbudgets")
REPLICASETS = Resource("ReplicaSet", "apps/v1", "replicasets")
DEPLOYMENTS = Resource("Deployment", "apps/v1", "deployments")
STATEFULSETS = Resource("StatefulSet", "apps/v1", "statefulsets")
DAEMONSETS = Resource("DaemonSet", "apps/v1", "daemonsets")
JOBS = Resource("Job", "batch/v1", "jobs")
CRONJOBS = Resource("CronJob", "batch/v1", "cronjobs")
ENICONFIGS = Resource("ENIConfig", "crd.k8s.amazonaws.com/v1alpha1", "eniconfigs",
                      namespaced=False)
NAMESPACES = Resource("Namespace", "v1", "namespaces", namespaced=False)
CONFIGMAPS = Resource("ConfigMap", "v1", "configmaps")
SECRETS = Resource("Secret", "v1", "secrets")
LEASES = Resource("Lease", "coordination.k8s.io/v1", "leases")
EVENTS = Resource("Event", "events.k8s.io/v1", "events")
CRDS = Resource("CustomResourceDefinition", "apiextensions.k8s.io/v1",
                "customresourcedefinitions", namespaced=False)

#: What a snapshot holds, in the order kubectl prints `get nodes,pods,...`.
SNAPSHOT_RESOURCES = (NODES, PODS, PVCS, PVS, PDBS, REPLICASETS, DEPLOYMENTS, STATEFULSETS,
                      DAEMONSETS, JOBS, CRONJOBS, ENICONFIGS)
#: Kinds a cluster may lack without anything being wrong (a CRD that is not installed).
OPTIONAL_RESOURCES = frozenset({ENICONFIGS})
