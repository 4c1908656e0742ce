#!/usr/bin/env python3
"""Build examples/cluster.yaml: a hand-shaped EKS cluster where every migration rule fires.

Why a script and not a hand-edited file: the snapshot is ~15,000 lines of kubectl-shaped
YAML, and its facts must stay consistent (pod IPs inside the right subnet, PVs in the zone
of the node their pod runs on, PDB status matching its pods, requests that fit their
nodes). Each node and workload below is placed on purpose; the comments say which rule it
demonstrates. Output is deterministic: rerun and diff.

    .venv/bin/python scripts/make-example.py [-o examples/cluster.yaml]
"""

from __future__ import annotations

import argparse
import io
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.synth import (  # noqa: E402
    BOTTLEROCKET_IMAGE,
    CONTAINERD_17,
    CONTAINERD_BOTTLEROCKET,
    DAY,
    DRAIN,
    ECR,
    MIGRATION_ENABLED,
    NOW,
    OPT_OUT,
    REMOVAL_DISABLED,
    ClaimTemplate,
    ClusterBuilder,
    ContainerSpec,
    Subnet,
    Workload,
    config_map_volume,
    csi_inline_volume,
    downward_api_volume,
    dump_yaml,
    ebs_inline_volume,
    eks_daemonsets,
    empty_dir_volume,
    ephemeral_volume,
    host_path_volume,
    nfs_volume,
    pod_requests,
    pvc_volume,
    secret_volume,
    toleration,
    ts,
)

CLUSTER = "shop-prod"
ENVOY = ContainerSpec("envoy", "public.ecr.aws/envoyproxy/envoy:v1.31.2", "50m", "64Mi",
                      ports=(("admin", 9901),))
MIGRATED = {MIGRATION_ENABLED: "true"}


class Example:
    """The builder plus a role -> node-name map and the requests placed on each node."""

    def __init__(self) -> None:
        self.b = ClusterBuilder(CLUSTER, seed=20250602)
        self.role: dict[str, str] = {}
        self.notes: list[tuple[str, str]] = []  # (role, what it demonstrates)
        self.used: dict[str, list[int]] = {}

    def node(self, role: str, itype: str, subnet: Subnet, note: str = "", *,
             age_days: float = 20, **kw: Any) -> None:
        # Leave gaps between addresses so names look like a real VPC's.
        subnet.next_ip += self.b.rng.randrange(3, 60)
        created = NOW - int(age_days * DAY) - self.b.rng.randrange(6 * 3600)
        name = self.b.add_node(itype, subnet, created=created, **kw)
        self.role[role] = name
        self.used[name] = [0, 0]
        if note:
            self.notes.append((role, note))

    def place(self, w: Workload, roles: Sequence[str | None],
              labels: Mapping[int, Mapping[str, str]] | None = None,
              phases: Mapping[int, str] | None = None) -> None:
        nodes = [self.role[r] if r else None for r in roles]
        self.b.add_workload(w, nodes, labels, phases)
        cpu, mem = pod_requests(w)
        for i, n in enumerate(nodes):
            if n and (phases or {}).get(i, "Running") == "Running":
                self.used[n][0] += cpu
                self.used[n][1] += mem


def app(ns: str, name: str, version: str, cpu: str, memory: str, **kw: Any) -> ContainerSpec:
    return ContainerSpec("app", f"{ECR}/{ns}/{name}:{version}", cpu, memory,
                         ports=(("http", 8080),), **kw)


def build() -> Example:
    ex = Example()
    b = ex.b
    # ------------------------------------------------------------------ network
    sub_a = b.add_subnet("us-east-1a", "10.20.0.0/19", subnet_id="subnet-0a3f1c9e5b7d2e4a1")
    sub_b = b.add_subnet("us-east-1b", "10.20.32.0/19", subnet_id="subnet-0b8e2d4f6a1c3e5b7")
    sub_a2 = b.add_subnet("us-east-1a", "10.20.64.0/20", name=f"{CLUSTER}-private-us-east-1a-2",
                          subnet_id="subnet-0c5d7e9f1a3b5c7d9")
    pods_a = b.add_subnet("us-east-1a", "100.64.0.0/19", for_pods=True,
                          subnet_id="subnet-0d2e4f6a8b0c2d4e6")
    pods_b = b.add_subnet("us-east-1b", "100.64.32.0/19", for_pods=True,
                          subnet_id="subnet-0e7f9a1b3c5d7e9f2")
    b.add_eniconfig("pods-us-east-1a", pods_a)
    b.add_eniconfig("pods-us-east-1b", pods_b)

    # ------------------------------------------------------------------ nodes
    n = ex.node
    # us-east-1a, first subnet: the general gen5 pool, with two CPU models behind m5/c5.
    n("gen5-a-old", "m5.2xlarge", sub_a, "old gen5 node (133 days): drain by age; Cascade "
      "Lake CPU labels (has AVX512VNNI)", age_days=133, cpu="cascadelake")
    n("gen5-a-cordoned", "m5.2xlarge", sub_a, f"cordoned with {DRAIN}=true: drain source",
      age_days=48, unschedulable=True, labels={DRAIN: "true"})
    n("gen5-a-c5", "c5.2xlarge", sub_a, "c5 with Cascade Lake labels: a gen5 destination "
      "offering every CPU feature of gen5-a-old", age_days=12, cpu="cascadelake")
    n("gen5-a-r5", "r5.2xlarge", sub_a, "r5 (memory-optimised) in the gen5 set; no CPU "
      "labels, so not compared", age_days=30)
    n("gen5-a-big", "m5.4xlarge", sub_a, "roomy gen5 destination in us-east-1a", age_days=6,
      spot=True)
    n("gen5-a-skylake", "m5.2xlarge", sub_a, "same type as gen5-a-old but a Skylake CPU "
      "lacking AVX512VNNI: PR004 blocks gen5-a-old -> here", age_days=9, cpu="skylake")
    n("gen6-a-1", "m6i.2xlarge", sub_a, "gen6 Intel (Ice Lake): never pairs with gen5",
      age_days=25, cpu="icelake")
    n("gen6-a-2", "c6i.2xlarge", sub_a, "", age_days=18, cpu="icelake")
    n("arm-a-1", "m6g.2xlarge", sub_a, "Graviton arm64: pairs only with arm64; stop-and-copy "
      "transfer", age_days=15, cpu="graviton2", template="arm64-general")
    n("arm-a-2", "c6g.2xlarge", sub_a, "", age_days=4, cpu="graviton2",
      template="arm64-general", spot=True)
    n("arm-a-cordoned", "m6g.2xlarge", sub_a, "cordoned arm64 source", age_days=70,
      cpu="graviton2", template="arm64-general", unschedulable=True, labels={DRAIN: "true"})
    n("old-c3", "c3.2xlarge", sub_a, "c3 (gen3, 14 months old): only m3 is compatible",
      age_days=420, template="legacy")
    n("old-m3", "m3.2xlarge", sub_a, "m3 (gen3): the only destination for old-c3",
      age_days=410, template="legacy")
    n("batch-a", "c5.4xlarge", sub_a, "tainted dedicated=batch:NoSchedule; only batch pods "
      "tolerate it", age_days=11, taints=(("dedicated", "batch", "NoSchedule"),),
      template="batch", labels={"workload-class": "batch"})
    n("gpu-a", "g4dn.xlarge", sub_a, "GPU node (nvidia.com/gpu=true:NoSchedule) running the "
      "GPU pod", age_days=8, taints=(("nvidia.com/gpu", "true", "NoSchedule"),),
      template="gpu")
    n("bottlerocket-a", "m5.2xlarge", sub_a, "Bottlerocket image: fails the AL2023 image "
      "rule (ND002)", age_days=27, os_image=BOTTLEROCKET_IMAGE,
      runtime=CONTAINERD_BOTTLEROCKET)
    n("containerd17-a", "m5.2xlarge", sub_a, "AL2023 with containerd 1.7.25: fails the "
      "containerd >= 2.0 rule (ND003)", age_days=95, runtime=CONTAINERD_17)
    # us-east-1a, third subnet: same zone and generation as the pool above, other subnet.
    n("gen5-a2-1", "m5.2xlarge", sub_a2, "second 1a subnet: standard networking keeps pods "
      "inside their subnet, so PR005 blocks moves from/to the first 1a subnet", age_days=16)
    n("gen5-a2-2", "c5.2xlarge", sub_a2, "", age_days=16)
    # us-east-1a, custom networking (pod IPs from ENIConfig pods-us-east-1a).
    cn_a = {"eniconfig": "pods-us-east-1a", "template": "custom-network"}
    n("custom-a-1", "m5.2xlarge", sub_a, "custom networking (ENIConfig pods-us-east-1a) "
      "with live.cast.ai/custom-network: a valid source", age_days=35, custom_network=True,
      **cn_a)
    n("custom-a-2", "m5.2xlarge", sub_a, "custom networking, same zone: destination for "
      "custom-a-1", age_days=22, custom_network=True, **cn_a)
    n("custom-a-nolabel", "c5.2xlarge", sub_a, "custom networking WITHOUT "
      "live.cast.ai/custom-network: may receive pods, never send them (PR006)", age_days=14,
      **cn_a)
    # us-east-1b, standard networking.
    n("gen5-b-old", "m5.2xlarge", sub_b, "old gen5 node in us-east-1b (150 days)",
      age_days=150, cpu="cascadelake")
    n("gen5-b-cordoned", "c5.2xlarge", sub_b, "cordoned drain source in us-east-1b",
      age_days=41, unschedulable=True, labels={DRAIN: "true"})
    n("gen5-b-r5", "r5.2xlarge", sub_b, "", age_days=33)
    n("gen5-b-big", "m5.4xlarge", sub_b, "roomy gen5 destination in us-east-1b", age_days=5)
    n("gen5-b-3", "m5.2xlarge", sub_b, "", age_days=19, cpu="skylake")
    n("gen6-b-1", "m6i.2xlarge", sub_b, "", age_days=24, cpu="icelake")
    n("gen6-b-2", "c6i.4xlarge", sub_b, "", age_days=13, cpu="icelake")
    n("arm-b-1", "m6g.2xlarge", sub_b, "", age_days=17, cpu="graviton2",
      template="arm64-general")
    n("arm-b-2", "c6g.4xlarge", sub_b, "", age_days=7, cpu="graviton2",
      template="arm64-general")
    n("batch-b", "c5.4xlarge", sub_b, "second batch node (tainted)", age_days=10,
      taints=(("dedicated", "batch", "NoSchedule"),), template="batch",
      labels={"workload-class": "batch"})
    n("system-b", "m5.xlarge", sub_b, "EKS managed node group 'system': no "
      "provisioner.cast.ai/managed-by label, so not managed (ND001)", age_days=200,
      managed=False, nodegroup="system")
    n("notready-b", "m5.2xlarge", sub_b, "NotReady (CNI not initialised): not a source or "
      "destination until it recovers", age_days=3, ready=False)
    # us-east-1b, custom networking (ENIConfig pods-us-east-1b).
    n("custom-b-1", "m5.2xlarge", sub_b, "custom networking in the other zone: custom-a-1 "
      "-> here is blocked by zone (PR006)", age_days=29, custom_network=True,
      eniconfig="pods-us-east-1b", template="custom-network")

    r = ex.role
    every = list(r)
    # ------------------------------------------------------------------ daemon sets
    for ds in eks_daemonsets():
        ex.place(ds, every)
    ex.place(Workload(
        "kube-system", "nvidia-device-plugin", "DaemonSet", containers=(ContainerSpec(
            "nvidia-device-plugin-ctr", "nvcr.io/nvidia/k8s-device-plugin:v0.17.0", "10m",
            "32Mi", memory_limit=None, mounts=(("device-plugin", "/var/lib/kubelet/device-plugins"),
                                               )),),
        volumes=(host_path_volume("device-plugin", "/var/lib/kubelet/device-plugins"),),
        node_selector={"node.kubernetes.io/instance-type": "g4dn.xlarge"},
        tolerations=(toleration("nvidia.com/gpu"),), priority_class="system-node-critical",
        created=NOW - 90 * DAY), ["gpu-a"])
    b.add_static_pod(r["gen5-b-old"], "kube-system", "registry-mirror", ContainerSpec(
        "registry", "public.ecr.aws/docker/library/registry:2.8.3", "50m", "64Mi"),
        (host_path_volume("cache", "/var/lib/registry-mirror", "DirectoryOrCreate"),))
    ex.used[r["gen5-b-old"]][0] += 50
    ex.used[r["gen5-b-old"]][1] += 64

    # ------------------------------------------------------------------ kube-system
    critical = (toleration("CriticalAddonsOnly"),)
    ex.place(Workload(
        "kube-system", "coredns", containers=(ContainerSpec(
            "coredns", "602401143452.dkr.ecr.us-east-1.amazonaws.com/eks/coredns:"
            "v1.11.4-eksbuild.2", "100m", "70Mi", memory_limit="170Mi",
            ports=(("dns", 53), ("metrics", 9153)), mounts=(("config-volume", "/etc/coredns"),)),),
        volumes=(config_map_volume("config-volume", "coredns"),), tolerations=critical,
        priority_class="system-cluster-critical", service_account="coredns",
        created=NOW - 400 * DAY), ["system-b", "gen5-b-r5"])
    ex.place(Workload(
        "kube-system", "ebs-csi-controller", containers=tuple(
            ContainerSpec(c, f"public.ecr.aws/eks-distro/kubernetes-csi/{c}:v1.31", "10m",
                          "40Mi", memory_limit="256Mi")
            for c in ("ebs-plugin", "csi-provisioner", "csi-attacher", "csi-snapshotter",
                      "csi-resizer", "liveness-probe")),
        volumes=(empty_dir_volume("socket-dir"),), tolerations=critical,
        priority_class="system-cluster-critical", service_account="ebs-csi-controller-sa",
        created=NOW - 300 * DAY), ["system-b", "gen6-b-1"])
    ex.place(Workload(
        "kube-system", "metrics-server", containers=(ContainerSpec(
            "metrics-server", "registry.k8s.io/metrics-server/metrics-server:v0.7.2", "100m",
            "200Mi", ports=(("https", 10250),), mounts=(("tmp-dir", "/tmp"),)),),
        volumes=(empty_dir_volume("tmp-dir"),), priority_class="system-cluster-critical",
        created=NOW - 300 * DAY), ["system-b"])

    # ------------------------------------------------------------------ shop
    shop_vols = (config_map_volume("config", "storefront-config"),
                 secret_volume("tls", "storefront-tls"), empty_dir_volume("cache"))
    ex.place(Workload(
        "shop", "storefront", containers=(
            app("shop", "storefront", "4.12.0", "250m", "512Mi",
                mounts=(("config", "/etc/storefront"), ("tls", "/etc/tls"), ("cache", "/cache"))),
            ENVOY), volumes=shop_vols, created=NOW - 20 * DAY),
        ["gen5-a-old", "gen5-a-cordoned", "gen5-b-old", "gen5-b-cordoned", "gen5-a-big",
         "gen5-b-big"], labels={0: MIGRATED, 1: MIGRATED, 2: MIGRATED, 3: MIGRATED})
    b.add_pdb("shop", "storefront", {"app": "storefront"}, max_unavailable=1)
    ex.place(Workload(
        "shop", "cart", containers=(app("shop", "cart", "2.3.1", "200m", "256Mi",
                                        mounts=(("config", "/etc/cart"),)),),
        init_containers=(ContainerSpec("wait-for-redis", "public.ecr.aws/docker/library/"
                                       "busybox:1.36.1", "10m", "16Mi", args=(
                                           "sh", "-c", "until nc -z redis-cart 6379; do "
                                           "sleep 1; done")),),
        volumes=(config_map_volume("config", "cart-config"),), created=NOW - 12 * DAY),
        ["gen5-a-old", "gen5-a-r5", "gen5-b-3", "gen5-b-old"],
        labels={0: MIGRATED, 3: MIGRATED})
    b.add_pdb("shop", "cart", {"app": "cart"}, min_available=2)
    ex.place(Workload(
        "shop", "checkout", containers=(app("shop", "checkout", "7.0.4", "300m", "384Mi"),),
        created=NOW - 9 * DAY), ["gen5-a-cordoned", "gen5-b-old", "custom-a-1"],
        labels={0: MIGRATED, 1: MIGRATED, 2: MIGRATED})
    ex.place(Workload(
        "shop", "redis-cart", "StatefulSet", containers=(ContainerSpec(
            "redis", "redis:7.2.5", "200m", "1Gi", ports=(("redis", 6379),)),),
        claims=(ClaimTemplate("data", "/data", "20Gi"),), created=NOW - 120 * DAY),
        ["gen5-a-old", "gen5-b-old", "gen5-a-big"], labels={0: MIGRATED})
    images = b.add_claim("shop", "product-images", storage="efs", size="500Gi",
                         created=NOW - 300 * DAY)
    ex.place(Workload(
        "shop", "image-resizer", containers=(app(
            "shop", "image-resizer", "1.8.2", "300m", "512Mi",
            mounts=(("images", "/srv/images"),)),),
        volumes=(pvc_volume("images", images),), created=NOW - 30 * DAY),
        ["arm-a-cordoned", "arm-b-1"], labels={0: MIGRATED})
    ex.place(Workload(
        "shop", "recommendations", containers=(app(
            "shop", "recommendations", "3.1.0", "250m", "512Mi"),),
        node_selector={"kubernetes.io/arch": "arm64"}, created=NOW - 15 * DAY),
        ["arm-a-1", "arm-a-cordoned", "arm-b-2"], labels={1: MIGRATED})
    ex.place(Workload(
        "shop", "frontend-canary", "Rollout", containers=(app(
            "shop", "frontend", "5.0.0-rc.2", "150m", "256Mi"),), created=NOW - 2 * DAY),
        ["gen5-a-cordoned", "gen6-a-1", "gen5-b-r5"])
    ex.place(Workload(
        "shop", "session-cache", containers=(ContainerSpec(
            "memcached", "memcached:1.6.31", "100m", "1Gi", ports=(("memcache", 11211),)),),
        labels={OPT_OUT: "true"}, created=NOW - 60 * DAY),
        ["gen5-a-c5", "gen5-b-cordoned"], labels={1: MIGRATED})
    ex.place(Workload(
        "shop", "reviews", containers=(app("shop", "reviews", "1.4.7", "100m", "192Mi"),),
        created=NOW - 25 * DAY), ["bottlerocket-a", "containerd17-a", "notready-b"])
    ex.place(Workload(
        "shop", "debug-shell", "Pod", containers=(ContainerSpec(
            "shell", "nicolaka/netshoot:v0.13", "50m", "64Mi", tty=True, stdin=True),),
        created=NOW - 1 * DAY), ["gen5-a-old"])

    # ------------------------------------------------------------------ payments
    ex.place(Workload(
        "payments", "postgres", "StatefulSet", containers=(ContainerSpec(
            "postgres", "postgres:16.4", "500m", "2Gi", memory_limit="4Gi",
            ports=(("postgres", 5432),)),),
        claims=(ClaimTemplate("pgdata", "/var/lib/postgresql/data", "100Gi"),),
        priority_class="business-critical", created=NOW - 250 * DAY),
        ["gen5-a-r5", "gen5-b-r5"], labels={0: MIGRATED})
    ex.place(Workload(
        "payments", "payments-api", containers=(
            app("payments", "payments-api", "12.4.0", "300m", "512Mi",
                mounts=(("secrets-store", "/mnt/secrets"),)), ENVOY),
        volumes=(csi_inline_volume("secrets-store", "secrets-store.csi.k8s.io",
                                   {"secretProviderClass": "payments-aws-secrets"}),),
        labels={REMOVAL_DISABLED: "true"}, priority_class="business-critical",
        created=NOW - 14 * DAY), ["gen6-a-1", "gen6-a-2", "gen6-b-1", "gen6-b-2"],
        labels={0: MIGRATED, 2: MIGRATED})
    b.add_pdb("payments", "payments-api", {"app": "payments-api"}, min_available=4)
    ex.place(Workload(
        "payments", "fraud-scorer", containers=(
            app("payments", "fraud-scorer", "2.0.9", "500m", "1Gi"),
            ContainerSpec("model-sync", f"{ECR}/payments/model-sync:0.4.1", "50m", "64Mi")),
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In",
                 "values": ["m6i.2xlarge", "c6i.2xlarge", "c6i.4xlarge"]}]}]}}},
        created=NOW - 21 * DAY), ["gen6-a-2", "gen6-b-2"])
    ex.place(Workload(
        "payments", "ledger-legacy", containers=(app(
            "payments", "ledger", "0.9.12", "200m", "512Mi", mounts=(("ledger", "/var/ledger"),)),),
        volumes=(ebs_inline_volume("ledger", "us-east-1a", "vol-0f3a5c7e9b1d3f5a7"),),
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In",
                 "values": ["us-east-1a"]}]}]}}},
        created=NOW - 700 * DAY), ["gen5-a-old"])
    ex.place(Workload(
        "payments", "ledger-exporter", containers=(app(
            "payments", "ledger-exporter", "1.2.0", "50m", "64Mi",
            mounts=(("ledger-logs", "/var/log/ledger"),)),),
        volumes=(host_path_volume("ledger-logs", "/var/log/ledger", "DirectoryOrCreate"),),
        created=NOW - 3 * DAY), ["gen5-a-c5", "gen5-b-3"], labels={0: MIGRATED, 1: MIGRATED})

    # ------------------------------------------------------------------ search
    ex.place(Workload(
        "search", "elasticsearch", "StatefulSet", containers=(ContainerSpec(
            "elasticsearch", "docker.elastic.co/elasticsearch/elasticsearch:8.15.2", "500m",
            "2Gi", ports=(("http", 9200), ("transport", 9300))),),
        init_containers=(ContainerSpec("sysctl", "public.ecr.aws/docker/library/busybox:"
                                       "1.36.1", "10m", "16Mi", privileged=True, args=(
                                           "sysctl", "-w", "vm.max_map_count=262144")),),
        claims=(ClaimTemplate("data", "/usr/share/elasticsearch/data", "200Gi"),),
        priority_class="business-critical", created=NOW - 180 * DAY),
        ["gen5-a-big", "gen5-b-big", "gen5-a2-1"], labels={2: MIGRATED})
    b.add_pdb("search", "elasticsearch", {"app": "elasticsearch"}, max_unavailable=1)
    ex.place(Workload(
        "search", "query-cache", "StatefulSet", containers=(ContainerSpec(
            "cache", f"{ECR}/search/query-cache:2.2.0", "200m", "1Gi"),),
        claims=(ClaimTemplate("nvme", "/cache", "100Gi", "local"),), created=NOW - 90 * DAY),
        ["gen5-a2-2", "gen5-b-3"])
    ex.place(Workload(
        "search", "search-api", containers=(app("search", "search-api", "6.3.2", "200m",
                                                "384Mi"),),
        node_selector={"kubernetes.io/os": "linux"}, created=NOW - 11 * DAY),
        ["gen5-a2-1", "gen5-a2-2", "gen5-b-3", "custom-a-2"], labels={0: MIGRATED})
    ex.place(Workload(
        "search", "indexer", containers=(app(
            "search", "indexer", "3.9.0", "300m", "768Mi",
            mounts=(("corpus", "/corpus"), ("podinfo", "/etc/podinfo"))),),
        volumes=(nfs_volume("corpus", "10.20.250.10", "/exports/search/corpus"),
                 downward_api_volume("podinfo")), created=NOW - 40 * DAY),
        ["custom-a-1", "custom-b-1"], labels={0: MIGRATED})
    ex.place(Workload(
        "search", "search-canary", "ReplicaSet", containers=(app(
            "search", "search-api", "6.4.0-beta.1", "200m", "384Mi"),), created=NOW - DAY),
        ["custom-a-2", "custom-a-nolabel"])

    # ------------------------------------------------------------------ batch
    batch_ok = (toleration("dedicated", "batch"),)
    ex.place(Workload(
        "batch", "nightly-report", "CronJob", containers=(ContainerSpec(
            "report", f"{ECR}/batch/nightly-report:2025.5.1", "1", "2Gi"),),
        tolerations=batch_ok, schedule="0 2 * * *", priority_class="batch-low",
        created=NOW - 200 * DAY), ["batch-a", "batch-b"], phases={1: "Succeeded"})
    ex.place(Workload(
        "batch", "catalog-sync", "CronJob", containers=(ContainerSpec(
            "sync", f"{ECR}/batch/catalog-sync:1.7.0", "500m", "1Gi",
            mounts=(("scratch", "/scratch"),)),),
        volumes=(ephemeral_volume("scratch", "50Gi"),), tolerations=batch_ok,
        schedule="15 * * * *", created=NOW - 100 * DAY), ["batch-b"], labels={0: MIGRATED})
    ex.place(Workload(
        "batch", "reindex-2025-06", "Job", containers=(ContainerSpec(
            "reindex", f"{ECR}/batch/reindex:4.1.0", "1", "1536Mi"),),
        init_containers=(ContainerSpec("fetch-manifest", f"{ECR}/batch/fetch:1.0.3", "100m",
                                       "128Mi"),),
        tolerations=batch_ok, created=NOW - 5 * 3600), ["batch-a", "batch-b", "batch-a"],
        labels={0: MIGRATED})
    ex.place(Workload(
        "batch", "ml-train", "Job", containers=(ContainerSpec(
            "train", f"{ECR}/batch/ml-train:0.12.0", "2", "8Gi",
            resources={"nvidia.com/gpu": "1"}),),
        tolerations=(toleration("nvidia.com/gpu"),), created=NOW - 7 * 3600), ["gpu-a"])
    ex.place(Workload(
        "batch", "backfill-orders", "Job", containers=(ContainerSpec(
            "backfill", f"{ECR}/batch/backfill:1.0.0", "12", "48Gi"),),
        tolerations=batch_ok, created=NOW - 2 * 3600), [None])

    # ------------------------------------------------------------------ monitoring
    ex.place(Workload(
        "monitoring", "prometheus", "StatefulSet", containers=(
            ContainerSpec("prometheus", "quay.io/prometheus/prometheus:v2.54.1", "500m", "2Gi",
                          ports=(("web", 9090),), mounts=(("config", "/etc/prometheus"),)),
            ContainerSpec("config-reloader", "quay.io/prometheus-operator/"
                          "prometheus-config-reloader:v0.77.1", "10m", "25Mi")),
        init_containers=(ContainerSpec("init-config-reloader", "quay.io/prometheus-operator/"
                                       "prometheus-config-reloader:v0.77.1", "10m", "25Mi"),),
        volumes=(config_map_volume("config", "prometheus-config"),),
        claims=(ClaimTemplate("prometheus-db", "/prometheus", "100Gi"),),
        service_account="prometheus", created=NOW - 160 * DAY),
        ["gen5-a-big", "gen5-b-big"], labels={0: MIGRATED})
    b.add_pdb("monitoring", "prometheus", {"app": "prometheus"}, min_available=1)
    grafana = b.add_claim("monitoring", "grafana", size="10Gi", node=r["gen5-b-3"],
                          created=NOW - 200 * DAY)
    ex.place(Workload(
        "monitoring", "grafana", containers=(ContainerSpec(
            "grafana", "grafana/grafana:11.2.2", "100m", "256Mi", ports=(("http", 3000),),
            mounts=(("storage", "/var/lib/grafana"), ("dashboards", "/etc/dashboards"),
                    ("admin", "/etc/secrets"))),),
        volumes=(pvc_volume("storage", grafana), config_map_volume("dashboards", "dashboards"),
                 secret_volume("admin", "grafana-admin")), created=NOW - 200 * DAY),
        ["gen5-b-3"], labels={0: MIGRATED})
    ex.place(Workload(
        "monitoring", "loki", "StatefulSet", containers=(ContainerSpec(
            "loki", "grafana/loki:3.2.0", "200m", "512Mi", ports=(("http", 3100),)),),
        claims=(ClaimTemplate("storage", "/var/loki", "50Gi", "ebs-intree"),),
        created=NOW - 500 * DAY), ["gen5-a-c5"])
    ex.place(Workload(
        "monitoring", "kube-state-metrics", containers=(ContainerSpec(
            "kube-state-metrics", "registry.k8s.io/kube-state-metrics/kube-state-metrics:"
            "v2.13.0", "50m", "150Mi", ports=(("http-metrics", 8080),)),),
        service_account="kube-state-metrics", created=NOW - 160 * DAY), ["gen6-a-2"])
    ex.place(Workload(
        "monitoring", "otel-collector", containers=(ContainerSpec(
            "otel-collector", "otel/opentelemetry-collector-contrib:0.111.0", "100m", "256Mi",
            mounts=(("podinfo", "/etc/podinfo"),)),),
        volumes=(downward_api_volume("podinfo"),), created=NOW - 45 * DAY),
        ["custom-a-nolabel", "custom-b-1"])
    return ex


HEADER = """\
# shop-prod: a hand-shaped EKS cluster snapshot for livepolicy (generated by
# scripts/make-example.py; do not edit by hand, rerun the script).
#
# Shape: `kubectl get nodes,pods,persistentvolumeclaims,persistentvolumes,
# poddisruptionbudgets,replicasets,deployments,statefulsets,daemonsets,jobs,cronjobs,
# eniconfigs -A -o yaml` plus one livepolicy.io/v1alpha1 ClusterInfo object (last item).
#
# Scenario: EKS {version} in us-east-1 (zones us-east-1a, us-east-1b),
# {nodes} nodes, {pods} pods. Three node subnets (two in us-east-1a, one in us-east-1b) use
# standard networking (prefix delegation off, no subnet tagged kubernetes.io/role/cni);
# four nodes use custom networking through the ENIConfigs pods-us-east-1a and
# pods-us-east-1b (pod subnets in 100.64.0.0/16, also listed in ClusterInfo). Cordoned
# nodes carry {drain}=true and some nodes are months old: the drain
# sources policies pick. Every node, pair and pod rule fires at least once (the cluster
# rules and same-region pass: one healthy EKS 1.31 cluster in one region).
#
# Nodes worth knowing (role: name: what it shows):
{nodes_table}
#
# Workloads: shop (storefront, cart, checkout, redis-cart, image-resizer on EFS,
# recommendations on arm64, frontend-canary = Argo Rollout, session-cache opted out,
# reviews on broken nodes, debug-shell with tty), payments (postgres, payments-api with
# removal-disabled and a PDB allowing 0 disruptions, fraud-scorer with node affinity,
# ledger-legacy on an in-tree EBS volume, ledger-exporter with a hostPath and a stale
# migration-enabled label), search (elasticsearch, query-cache on local PVs, search-api,
# indexer on NFS, search-canary = bare ReplicaSet), batch (CronJobs, Jobs, a GPU Job,
# a Pending Job), monitoring and kube-system (DaemonSets, a static mirror pod).
"""


def render(ex: Example) -> str:
    snap = ex.b.snapshot()
    table = "\n".join(
        textwrap.fill(f"{role}: {ex.role[role]}: {note}", 96, initial_indent="#   ",
                      break_on_hyphens=False, break_long_words=False,
                      subsequent_indent="#       ") for role, note in ex.notes)
    pods = sum(1 for i in snap["items"] if i["kind"] == "Pod")
    header = HEADER.format(version=ex.b.kubernetes_version, nodes=len(ex.role), pods=pods,
                           drain=DRAIN, nodes_table=table)
    buf = io.StringIO()
    dump_yaml(snap, buf)
    return header + buf.getvalue()


def check_room(ex: Example) -> list[str]:
    """Requests must leave room for migrated pods: no node above 70% CPU or memory."""
    problems = []
    for name, (cpu, mem) in ex.used.items():
        it = ex.b.node_type[name]
        c = cpu / it.allocatable_cpu_millis
        m = mem * 1024 / it.allocatable_memory_ki
        if c > 0.7 or m > 0.7:
            problems.append(f"{name} ({it.name}): cpu {c:.0%}, memory {m:.0%}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("-o", "--output", type=Path, default=ROOT / "examples" / "cluster.yaml")
    args = p.parse_args(argv)
    ex = build()
    problems = check_room(ex)
    if problems:
        print("nodes too full to receive migrated pods:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    text = render(ex)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"{args.output}: {len(ex.role)} nodes, {len(text) / 1e6:.2f} MB "
          f"(snapshot time {ts(NOW)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
