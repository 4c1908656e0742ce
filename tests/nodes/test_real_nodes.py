"""Issue 10 on real parts: the chart's pods run on two real kubelets, and `livepolicy plan
--cluster kube` + `livepolicy apply` move a Deployment's pod from one node to the other
through the chart's kubelet-runtime agents (kubelet checkpoint API on the source, the
checkpoint image into the destination's containerd, CRI restore there).

Figures (freeze and total time of the real migration) are written to
$LIVEPOLICY_BENCH_OUT (default: none) for docs/benchmarks.md.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from livepolicy.agent.tls_identity import CERT_ANNOTATION
from tests.nodes.conftest import (
    DESTINATION,
    NAMESPACE,
    POLICIES,
    PORT,
    SOURCE,
    PodWatch,
    Workload,
    agents_ready,
    lease_holder,
    livepolicy,
    plan_and_apply,
    pods,
    wait_for,
)
from tests.support.nodeenv import ARM_NODE, IPAM_DIR, NODES, NodeTestEnv


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
    assert moved["status"]["podIP"] == source["status"]["podIP"]  # keepPodAddress
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


class Client:
    """One TCP connection from the host to the pod, a request every 50 ms, every answer
    (or the error that ended it) recorded with its time."""

    def __init__(self, ip: str) -> None:
        self.sock = socket.create_connection((ip, PORT), timeout=5)
        self.sock.settimeout(60)  # a retransmission may wait out the whole freeze
        self.file = self.sock.makefile("r")
        self.answers: list[tuple[float, str]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        try:
            while not self._stop.wait(0.05):
                seq += 1
                self.sock.sendall(f"REQ {seq}\n".encode())
                line = self.file.readline().strip()
                if not line:
                    raise ConnectionError("the server closed the connection")
                self.answers.append((time.monotonic(), line))
        except (OSError, ConnectionError) as exc:
            self.error = exc

    def wait_answers(self, n: int) -> None:
        wait_for(lambda: len(self.answers) >= n or self.error is not None,
                 f"{n} answers on the connection", timeout=60)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(70)
        self.sock.close()


def test_live_migration_keeps_the_address_and_an_open_connection(
        workload: Workload, tmp_path: Path) -> None:
    """Issue 10 item 6: the copy has its source's IP (livepolicy-ipam) and a client's TCP
    connection, sending all along, is served by the source and then by the copy: every
    request answered once, in order, by the same process (count on, same token)."""
    source = workload.pod()
    ip = source["status"]["podIP"]
    client = Client(ip)
    try:
        client.wait_answers(5)
        with PodWatch(workload) as watch:
            _, events = plan_and_apply(workload.env, tmp_path)
        assert events[-1]["changes"]["migrated"] == 1, events[-1]
        seen = len(client.answers)
        client.wait_answers(seen + 5)
    finally:
        client.close()
    assert client.error is None, f"{client.error!r} after {client.answers[-3:]}"
    moved = workload.pod()
    assert moved["spec"]["nodeName"] == DESTINATION and moved["status"]["podIP"] == ip
    assert watch.seen == {source["metadata"]["name"], moved["metadata"]["name"]}
    fields = [line.split() for _, line in client.answers]
    assert {f[3] for f in fields} == {fields[0][3]}  # one process start token
    seqs, counts = [int(f[1]) for f in fields], [int(f[2]) for f in fields]
    assert seqs == list(range(1, len(seqs) + 1))  # each answered once, in order
    assert counts == list(range(counts[0], counts[0] + len(counts)))  # no request lost
    # The copy answers on the connection the source had.
    assert workload.ask("REQ 0")[0].split()[2] == str(counts[-1] + 1)
    gap = max(b - a for (a, _), (b, _) in itertools.pairwise(client.answers))
    print(f"longest wait for an answer on the open connection: {gap:.2f} s "
          f"(freeze {_outcome(events)['freeze_ms']} ms)")
    # The source's node keeps the address off its pool while the copy has it.
    held = workload.env.node(SOURCE).host_path(IPAM_DIR) / "held"
    wait_for(lambda: held.is_dir() and any(
        json.loads(p.read_text()).get("address") == ip for p in held.iterdir()),
        "the source's node holding the moved address", timeout=60)
