"""Issue 10 on real parts: the chart's pods run on two real kubelets, and `livepolicy plan
--cluster kube` + `livepolicy apply` move a Deployment's pod from one node to the other
through the chart's kubelet-runtime agents (kubelet checkpoint API on the source, the
checkpoint image into the destination's containerd, CRI restore there).

Figures (freeze and total time of the real migration) are written to
$LIVEPOLICY_BENCH_OUT (default: none) for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography import x509

from livepolicy.agent.tls_identity import CERT_ANNOTATION
from tests.nodes.conftest import (
    DESTINATION,
    NAMESPACE,
    POLICIES,
    SOURCE,
    PodWatch,
    Workload,
    agents_ready,
    lease_holder,
    livepolicy,
    plan_and_apply,
    pods,
)
from tests.support.nodeenv import ARM_NODE, NODES, NodeTestEnv


def test_chart_runs_on_both_nodes(chart: NodeTestEnv) -> None:
    assert set(agents_ready(chart)) == {n.name for n in NODES}
    holder = lease_holder(chart)
    controllers = pods(chart, NAMESPACE, "app.kubernetes.io/component%3Dcontroller")
    assert len(controllers) == 2
    assert holder is not None and holder.split("_")[0] in {
        p["metadata"]["name"] for p in controllers}
    # The arm64 node has no kubelet: its agent pod is created and never runs.
    on_arm = [p for p in pods(chart, NAMESPACE, "app.kubernetes.io/component%3Dagent")
              if p["spec"].get("nodeName") == ARM_NODE or p["status"].get("phase") == "Pending"]
    assert len(on_arm) == 1
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    # agent.tls.identity perNode: each agent made its own key and wrote its certificate,
    # naming its node and address, on its own pod (with its pod's token, through the
    # chart's admission policy); no TLS Secret exists.
    certs: dict[str, str] = {}
    for p in pods(chart, NAMESPACE, "app.kubernetes.io/component%3Dagent"):
        if p["status"].get("phase") == "Running":
            certs[p["spec"]["nodeName"]] = p["metadata"]["annotations"][CERT_ANNOTATION]
    assert set(certs) == {n.name for n in NODES} and len(set(certs.values())) == 2
    for n in NODES:
        cert = x509.load_pem_x509_certificate(certs[n.name].encode())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [n.name]
        assert n.ip in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]


def test_arm_node_is_refused(chart: NodeTestEnv) -> None:
    r = livepolicy(chart, "explain", "nodes", SOURCE, ARM_NODE, "--cluster", "kube",
                   "--policies", str(POLICIES), "--json")
    doc = json.loads(r.stdout)
    verdicts = {v["code"]: v["ok"] for v in doc["pair"]}
    assert verdicts["PR002"] is False  # architecture
    r = livepolicy(chart, "explain", "nodes", SOURCE, DESTINATION, "--cluster", "kube",
                   "--policies", str(POLICIES), "--json")
    doc = json.loads(r.stdout)
    assert all(v["ok"] for part in ("pair", "source_node", "destination_node")
               for v in doc[part]), doc


def _outcome(events: list[dict[str, Any]]) -> dict[str, Any]:
    (outcome,) = events[-1]["outcomes"]
    return dict(outcome)


def test_live_migration_keeps_the_process(workload: Workload, tmp_path: Path) -> None:
    before = workload.ask("REQ 1", "REQ 2", "REQ 3")
    token = before[-1].split()[3]
    source = workload.pod()
    with PodWatch(workload) as watch:
        doc, events = plan_and_apply(workload.env, tmp_path)
    (m,) = doc["migrations"]
    assert (m["from"], m["to"]) == (SOURCE, DESTINATION)
    summary = events[-1]
    assert summary["changes"]["migrated"] == 1, summary
    moved = workload.pod()  # exactly one pod of the workload
    assert moved["spec"]["nodeName"] == DESTINATION
    assert moved["metadata"]["name"] != source["metadata"]["name"]
    owners = moved["metadata"]["ownerReferences"]
    assert owners == source["metadata"]["ownerReferences"]
    # The same process, with its memory: the count goes on, the start token is the same.
    after = workload.ask("REQ 4")[0].split()
    assert after[2] == "4" and after[3] == token
    # Its ReplicaSet never made a replacement: only the source and the copy ever existed.
    assert watch.seen == {source["metadata"]["name"], moved["metadata"]["name"]}
    replan = livepolicy(workload.env, "plan", "--cluster", "kube", "--policies",
                        str(POLICIES))
    assert replan.returncode == 0 and "No changes." in replan.stdout, replan.stdout
    out = _outcome(events)
    if os.environ.get("LIVEPOLICY_BENCH_OUT"):
        Path(os.environ["LIVEPOLICY_BENCH_OUT"]).write_text(json.dumps({
            "freeze_ms": out["freeze_ms"], "duration_ms": out["duration_ms"]}))
