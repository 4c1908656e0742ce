"""`apply --cluster kube` and `--agents kube` against the real kube-apiserver.

`KubeAgents` reads the agents of the Helm chart's DaemonSet: the objects here are the
chart's own (`helm template`), stored in a real apiserver, and the one Ready agent pod
points at a real agent process started from the DaemonSet's arguments with the chart's
generated token and certificate, so the endpoint, token and CA read from the API are
proven by an authenticated HTTPS call. There is no kubelet: pod statuses are written
through the `/status` subresource, as tests/kube/seed.py does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from livepolicy.agent import AgentClient
from livepolicy.agent.tls_identity import CERT_ANNOTATION, ensure_identity
from livepolicy.apply.kube_agents import KubeAgents
from livepolicy.apply.local_agents import LocalSimAgents
from livepolicy.cli.common import load_facts
from livepolicy.cli.main import cli
from livepolicy.core.diagnostics import DiagnosticError
from livepolicy.kube.client import KubeClient
from livepolicy.kube.lease import LeaseLock
from livepolicy.kube.resources import DAEMONSETS, NAMESPACES, PODS, SECRETS, Resource
from tests.apply.conftest import (
    BASIC,
    PLANNED,
    assert_each_pod_once,
    parse_events,
    pods_on_agents,
    unfinished_migrations,
)
from tests.kube.seed import put_cluster_info, seed
from tests.kube.test_chart_apiserver import pod_bound_token
from tests.kube.test_chart_render import agent_args, find, render, secret_data
from tests.support.envtest import KubeTestEnv

pytestmark = pytest.mark.kube

NS = "livepolicy"
SERVICE_ACCOUNTS = Resource("ServiceAccount", "v1", "serviceaccounts")
RBAC = {kind: Resource(kind, "rbac.authorization.k8s.io/v1", plural, namespaced=namespaced)
        for kind, plural, namespaced in (
            ("Role", "roles", True), ("RoleBinding", "rolebindings", True),
            ("ClusterRole", "clusterroles", False),
            ("ClusterRoleBinding", "clusterrolebindings", False))}
DAEMONSET = "lp-livepolicy-agent"
POLICIES = str(BASIC / "policies.yaml")


@pytest.fixture(scope="module")
def live_cluster(kube: KubeClient, kube_env: KubeTestEnv) -> dict[str, Any]:
    """The basic case stored in the apiserver, and its plan (`plan --cluster kube`):
    what apply would move."""
    snap = YAML(typ="safe", pure=True).load((BASIC / "cluster.yaml").read_text())
    seed(kube, [_storable(o) for o in snap["items"]])
    info = next(o for o in snap["items"] if o["kind"] == "ClusterInfo")
    put_cluster_info(kube, info, name=info["metadata"]["name"])
    r = CliRunner().invoke(cli, ["plan", "--cluster", "kube", "--policies", POLICIES,
                                 "--json", "--detailed-exitcode", "--kubeconfig",
                                 str(kube_env.kubeconfig_path)])
    assert r.exit_code == 2, r.output  # changes to make
    doc: dict[str, Any] = json.loads(r.stdout)
    assert sorted((m["pod"], m["to"]) for m in doc["migrations"]) == sorted(PLANNED.items())
    return doc


def _storable(obj: dict[str, Any]) -> dict[str, Any]:
    """The basic case's hand-written objects with what the apiserver requires and the
    planner does not read: owner uids, workload selectors and templates, volume sizes
    and access modes."""
    obj = copy.deepcopy(obj)
    for i, ref in enumerate((obj.get("metadata") or {}).get("ownerReferences") or []):
        ref.setdefault("uid", f"00000000-0000-0000-0000-{i:012d}")
    if obj["kind"] in ("ReplicaSet", "StatefulSet", "Deployment", "DaemonSet"):
        spec = obj.setdefault("spec", {})
        labels = {"app": obj["metadata"]["name"]}
        spec.setdefault("selector", {"matchLabels": labels})
        spec.setdefault("template", {"metadata": {"labels": labels}, "spec": {
            "containers": [{"name": "c", "image": "registry.invalid/app:1"}]}})
    if obj["kind"] in ("PersistentVolume", "PersistentVolumeClaim"):
        obj["spec"].setdefault("accessModes", ["ReadWriteOnce"])
        if obj["kind"] == "PersistentVolume":
            obj["spec"].setdefault("capacity", {"storage": "10Gi"})
        else:
            obj["spec"].setdefault("resources", {"requests": {"storage": "10Gi"}})
    return obj


def _pod(ds: dict[str, Any], node: str, port: int) -> dict[str, Any]:
    """A pod as the DaemonSet controller makes it (absent here): template + node + owner."""
    tmpl = copy.deepcopy(ds["spec"]["template"])
    spec = tmpl["spec"]
    spec["nodeName"] = node
    for c in spec["containers"]:
        for p in c.get("ports") or []:
            if p.get("name") == "agent":
                p["containerPort"] = port
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": f"{DAEMONSET}-{node}", "labels": tmpl["metadata"]["labels"],
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                             "name": ds["metadata"]["name"], "uid": ds["metadata"]["uid"],
                             "controller": True}]}, "spec": spec}


def _status(kube: KubeClient, name: str, ready: bool, ip: str) -> None:
    cond = {"type": "Ready", "status": "True"} if ready else {
        "type": "Ready", "status": "False", "reason": "ContainersNotReady"}
    kube.patch(PODS, name, {"status": {"phase": "Running", "podIP": ip, "hostIP": ip,
                                       "conditions": [cond]}}, NS, subresource="status")


def start_chart_agents(kube: KubeClient, tmp: Path, auth: str,
                       agent_kubeconfig: Path | None = None, *, identity: str = "shared",
                       kube_env: KubeTestEnv | None = None) -> Iterator[dict[str, Any]]:
    """The chart's agent objects (`agent.auth.mode` = auth, `agent.tls.identity` =
    identity) in the apiserver; a real agent for node-a (Ready pod) started from the
    DaemonSet's arguments, a pod on node-b that is not Ready, nothing on node-c. All
    removed afterwards (the pods name absent nodes). A reviewing agent reaches the API
    server with `agent_kubeconfig`, as its in-cluster ServiceAccount would; a perNode agent
    writes its certificate on its pod with the token bound to that pod (`kube_env`)."""
    per_node = identity == "perNode"
    objs = render(tmp, {"agent": {"runtime": "sim", "hostNetwork": False, "tls": {
        "identity": identity, "dnsNames": ["localhost"], "ipAddresses": ["127.0.0.1"]},
        "auth": {"mode": auth}}})
    if kube.get_optional(NAMESPACES, NS) is None:
        kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": NS}})
    tls_secret = None if per_node else find(objs, "Secret", "lp-livepolicy-agent-tls")
    for obj in (o for o in objs if o["kind"] == "Secret"):
        kube.create(SECRETS, obj, NS)
    for sa in (o for o in objs if o["kind"] == "ServiceAccount"):
        if kube.get_optional(SERVICE_ACCOUNTS, sa["metadata"]["name"], NS) is None:
            kube.create(SERVICE_ACCOUNTS, sa, NS)
    rbac = [o for o in objs if (o["kind"] in RBAC and o["metadata"]["name"].endswith(
                ("-tokenreview", "-agent-certificate")))
            or (o["kind"] == "Role" and o["metadata"]["name"] == "lp-livepolicy-apply-token")]
    for obj in rbac:
        kube.create(RBAC[obj["kind"]], obj, obj["metadata"].get("namespace"))
    ds = kube.create(DAEMONSETS, find(objs, "DaemonSet"), NS)
    token = ""
    dirs = {name: tmp / name for name in ("token", "tls", "state")}
    for d in dirs.values():
        d.mkdir(mode=0o700)
    if auth == "sharedToken":
        token = secret_data(find(objs, "Secret", "lp-livepolicy-agent-token"), "token").decode()
        (dirs["token"] / "token").write_text(token)
    for key in ("tls.crt", "tls.key", "ca.crt"):
        if tls_secret is not None:
            (dirs["tls"] / key).write_bytes(secret_data(tls_secret, key))
    env = {"NODE_NAME": "node-a", "POD_IP": "127.0.0.1", "HOST_IP": "127.0.0.1",
           "POD_NAMESPACE": NS, "POD_NAME": f"{DAEMONSET}-node-a"}
    args = agent_args(ds, env, {"/etc/livepolicy/agent-token": dirs["token"],
                                "/etc/livepolicy/agent-tls": dirs["tls"],
                                "/var/lib/livepolicy-agent": dirs["state"]})
    args[args.index("--port") + 1] = "0"
    if per_node:
        # The agent writes on its pod before it listens, so the pod comes first, with the
        # port the agent will take (a pod's ports cannot change).
        assert kube_env is not None, "a perNode agent needs kube_env for its pod's token"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            args[args.index("--port") + 1] = str(probe.getsockname()[1])
        own = kube.create(PODS, _pod(ds, "node-a", int(args[args.index("--port") + 1])), NS)
        agent_kubeconfig = kube_env.token_kubeconfig(pod_bound_token(kube_env, own),
                                                     tmp / "agent-kubeconfig")
    if agent_kubeconfig is not None:
        args += ["--kubeconfig", str(agent_kubeconfig)]
    proc = subprocess.Popen([sys.executable, "-m", "livepolicy.agent", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        url = json.loads(line)["url"]
        port = int(url.rsplit(":", 1)[1])
        for node, ready in (("node-a", True), ("node-b", False)):
            if not (per_node and node == "node-a"):
                kube.create(PODS, _pod(ds, node, port), NS)
            _status(kube, f"{DAEMONSET}-{node}", ready, "127.0.0.1")
        yield {"url": url, "token": token, "args": args, "state": dirs["state"],
               "ca": secret_data(tls_secret, "ca.crt").decode() if tls_secret else ""}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        kube.delete_collection(PODS, NS, grace_period=0)
        for res in (DAEMONSETS, SECRETS, SERVICE_ACCOUNTS):
            kube.delete_collection(res, NS)
        for obj in rbac:
            kube.delete(RBAC[obj["kind"]], obj["metadata"]["name"],
                        obj["metadata"].get("namespace"))


@pytest.fixture()
def chart_agents(kube: KubeClient, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The chart's agents with `agent.auth.mode: sharedToken` (a token Secret)."""
    yield from start_chart_agents(kube, tmp_path, "sharedToken")


def test_kube_agents_reads_endpoint_token_and_ca_from_the_chart(
        kube: KubeClient, chart_agents: dict[str, Any]) -> None:
    agents = KubeAgents(kube)
    assert sorted(agents.endpoints) == ["node-a"]
    ep = agents.endpoint("node-a")
    assert ep.url == chart_agents["url"]  # https://127.0.0.1:PORT: the certificate's SAN
    assert ep.token == chart_agents["token"]
    assert ep.ssl_context is not None
    # The CA came from the Secret: the hostname-verified HTTPS call with the token works.
    health = AgentClient(ep.url, ep.token, ssl_context=ep.ssl_context).health()
    assert health["status"] == "ok" and health["node"] == "node-a"
    agents.require(["node-a"])  # nothing missing: no error


def test_missing_and_unready_agents_are_located_and_explained(
        kube: KubeClient, chart_agents: dict[str, Any]) -> None:
    agents = KubeAgents(kube)
    with pytest.raises(DiagnosticError) as err:
        agents.require(["node-a", "node-b", "node-c"])
    b, c = err.value.diagnostics
    for d in (b, c):
        assert d.file == "--agents kube"
        assert f"agent DaemonSet {NS}/{DAEMONSET}" in d.message
        assert "--agents-namespace" in d.message
    assert "node node-b" in b.message and f"{DAEMONSET}-node-b is not Ready " \
        "(ContainersNotReady)" in b.message
    assert "node node-c" in c.message and "has no pod there" in c.message
    with pytest.raises(DiagnosticError, match="no Ready agent on node node-c"):
        agents.endpoint("node-c")


def test_an_unreadable_secret_is_named(kube: KubeClient, chart_agents: dict[str, Any],
                                       tmp_path: Path) -> None:
    """The token Secret the pod mounts is gone: the message names it and the way out;
    `--agent-token-file` is that way out."""
    kube.delete(SECRETS, "lp-livepolicy-agent-token", NS)
    with pytest.raises(DiagnosticError) as err:
        KubeAgents(kube)
    (d,) = err.value.diagnostics
    assert f"cannot read Secret {NS}/lp-livepolicy-agent-token" in d.message
    assert "--agent-token-file" in d.message
    token = tmp_path / "given-token"
    token.write_text(chart_agents["token"] + "\n")
    ep = KubeAgents(kube, token_file=str(token)).endpoint("node-a")
    assert ep.token == chart_agents["token"]
    assert AgentClient(ep.url, ep.token, ssl_context=ep.ssl_context).health()["status"] == "ok"


def test_kube_agents_trusts_each_nodes_own_certificate(
        kube: KubeClient, kube_env: KubeTestEnv, tmp_path: Path) -> None:
    """agent.tls.identity perNode: the agent made its own key, wrote its certificate on
    its pod with its pod's own token, and apply trusts exactly that certificate for that
    node: another key posing at the same address is refused during the handshake, before
    any token is sent; a pod that has not published yet does not count as Ready."""
    with contextlib.contextmanager(start_chart_agents)(
            kube, tmp_path, "sharedToken", identity="perNode", kube_env=kube_env) as agents:
        pod = kube.get(PODS, f"{DAEMONSET}-node-a", NS)
        cert = pod["metadata"]["annotations"][CERT_ANNOTATION]
        assert cert == (agents["state"] / "tls" / "agent.crt").read_text()
        assert (agents["state"] / "tls" / "agent.key").stat().st_mode & 0o777 == 0o600
        assert not [o for o in kube.list(SECRETS, namespace=NS).items
                    if o["metadata"]["name"].endswith("-tls")]
        ep = KubeAgents(kube).endpoint("node-a")
        assert ep.certificate == cert and ep.url == agents["url"]
        health = AgentClient(ep.url, ep.token, ssl_context=ep.ssl_context).health()
        assert health["node"] == "node-a"
        # Another key at node-a's address (a node posing as node-a's agent): apply's
        # context for node-a refuses it; the impostor's own pin would be needed.
        impostor = ensure_identity(tmp_path / "impostor", "node-a", ["127.0.0.1"])
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(impostor.cert_file, impostor.key_file)
        with socket.socket() as lsock:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen()
            threading.Thread(target=_handshake_once, args=(lsock, server), daemon=True).start()
            assert ep.ssl_context is not None
            with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify"), \
                    socket.create_connection(lsock.getsockname(), timeout=5) as raw:
                ep.ssl_context.wrap_socket(raw, server_hostname="127.0.0.1")
        # Not yet published (or wiped): the pod does not count.
        kube.patch(PODS, f"{DAEMONSET}-node-a",
                   {"metadata": {"annotations": {CERT_ANNOTATION: None}}}, NS)
        agents_now = KubeAgents(kube)
        assert "node-a" not in agents_now.endpoints
        assert "has not published its certificate yet" in agents_now.not_ready["node-a"]


def _handshake_once(lsock: socket.socket, ctx: ssl.SSLContext) -> None:
    conn, _ = lsock.accept()
    try:
        with ctx.wrap_socket(conn, server_side=True):
            pass
    except (OSError, ssl.SSLError):
        pass  # the client refuses the certificate: that is the point


def _apply(kube_env: KubeTestEnv, state: Path, *extra: str) -> Any:
    return CliRunner().invoke(cli, [
        "apply", "--cluster", "kube", "--policies", POLICIES, "--yes",
        "--state-dir", str(state), "--kubeconfig", str(kube_env.kubeconfig_path), *extra])


def _pods(kube: KubeClient) -> dict[str, tuple[str, dict[str, str]]]:
    """Every pod's node and labels."""
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}":
            (str(p["spec"].get("nodeName")), p["metadata"].get("labels") or {})
            for p in kube.list(PODS).items}


def test_apply_cluster_kube_without_agents_is_a_located_error(
        kube_env: KubeTestEnv, kube: KubeClient, live_cluster: dict[str, Any],
        tmp_path: Path) -> None:
    """Used to end in `FileNotFoundError: 'kube'` after taking the lock. Now the agents
    default to the chart's DaemonSet, and nodes without one stop apply before any lock."""
    nodes = sorted({m[k] for m in live_cluster["migrations"] for k in ("from", "to")})
    before = _pods(kube)
    state = tmp_path / "state"
    for extra in ((), ("--json",)):
        r = _apply(kube_env, state, *extra)
        assert r.exit_code == 1, r.output
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        assert "Traceback" not in r.output
        for node in nodes:  # every source and destination of the plan, each located
            assert f"no Ready agent on node {node}: agent DaemonSet " in r.output
        assert "has no pod there" in r.output
    assert not state.exists()  # no lock, no journal
    assert _pods(kube) == before


def test_apply_cluster_kube_with_sim_agents_simulates_and_writes_nothing(
        kube_env: KubeTestEnv, kube: KubeClient, live_cluster: dict[str, Any],
        tmp_path: Path) -> None:
    before = _pods(kube)
    r = _apply(kube_env, tmp_path / "state", "--agents", "sim", "--json",
               "--sim-time-scale", "0.001")
    assert r.exit_code == 0, r.output
    events = parse_events(r.stdout)
    assert all(e["simulated"] is True and e["@message"].startswith("[simulated] ")
               for e in events)
    assert events[-1]["changes"]["migrated"] == len(live_cluster["migrations"])
    (written,) = [e for e in events if e["type"] == "cluster_write"]
    assert "nothing written to the cluster" in written["@message"]
    assert written["written"] is False
    assert _pods(kube) == before  # no pod moved, not even a label changed


def test_lock_timeout_waits_for_a_held_lease(kube_env: KubeTestEnv, kube: KubeClient,
                                             tmp_path: Path) -> None:
    """`--lock-timeout` with `--lock-backend kube`: the Lease is tried again until its
    holder lets go, or the time is up (the holder's ID in the message)."""
    cluster = tmp_path / "cluster.yaml"
    shutil.copy(BASIC / "cluster.yaml", cluster)
    args = ["apply", "--cluster", str(cluster), "--agents", "sim", "--policies",
            str(BASIC / "policies.yaml"), "--yes", "--json", "--sim-time-scale", "0.001",
            "--state-dir", str(tmp_path / "state"), "--lock-backend", "kube",
            "--kubeconfig", str(kube_env.kubeconfig_path)]
    holder = LeaseLock(kube, renew=False)
    holder.acquire()
    timer = threading.Timer(1.5, holder.release)
    try:
        gave_up = CliRunner().invoke(cli, [*args, "--lock-timeout", "0.5"])
        assert gave_up.exit_code == 1, gave_up.output
        assert "waited 0.5 s (--lock-timeout)" in gave_up.output
        assert holder.id in gave_up.output
        assert "nodeName: a1" in cluster.read_text()  # nothing moved
        timer.start()
        started = time.monotonic()
        done = CliRunner().invoke(cli, [*args, "--lock-timeout", "30"])
        assert done.exit_code == 0, done.output
        assert time.monotonic() - started >= 1.0  # it waited for the holder
        assert '"migrated": 3' in done.output
    finally:
        timer.cancel()
        timer.join()
        holder.release()


@pytest.mark.slow
def test_killed_kube_locked_apply_resumes_from_a_fresh_directory(
        kube_env: KubeTestEnv, kube: KubeClient, tmp_path: Path) -> None:
    """Issue 11: with `--lock-backend kube` the journal lives in the cluster beside the
    Lease. An apply SIGKILLed mid-migration in one working directory is finished from
    another that has only the plan: it waits for the dead run's Lease to expire
    (--lock-timeout), takes the journal from the ConfigMap, settles the interrupted
    migration and carries out the rest; every pod runs exactly once."""
    kubeconfig = str(kube_env.kubeconfig_path)
    cluster = tmp_path / "cluster.yaml"
    shutil.copy(BASIC / "cluster.yaml", cluster)
    first, second = tmp_path / "first", tmp_path / "second"
    for d in (first, second):
        d.mkdir()
    planned = CliRunner().invoke(cli, ["plan", "--cluster", str(cluster), "--policies",
                                       str(BASIC / "policies.yaml"), "--out",
                                       str(first / "plan.json")])
    assert planned.exit_code == 0, planned.output
    shutil.copy(first / "plan.json", second / "plan.json")
    facts = load_facts(str(cluster))
    pool = LocalSimAgents(tmp_path / "shared", facts, time_scale=1.0)  # seconds per move
    pool.start()
    try:
        pool.seed(facts)
        agents = tmp_path / "agents.yaml"
        agents.write_text("".join(
            f"{node}:\n  url: {pool.endpoint(node).url}\n  tokenFile: "
            f"{a.state_dir / 'token'}\n" for node, a in pool.agents.items()))
        args = ["apply", "plan.json", "--agents", str(agents), "--json", "--lock-backend",
                "kube", "--kubeconfig", kubeconfig, "--call-timeout", "30"]
        proc = subprocess.Popen([sys.executable, "-m", "livepolicy", *args], cwd=first,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line).get("phase") == "transferring":
                break
        else:
            raise AssertionError(f"apply ended early ({proc.wait()})")
        proc.kill()  # SIGKILL: no release, no rollback, the Lease left to expire
        proc.wait()
        proc.stdout.close()
        assert not (second / ".livepolicy").exists()
        r = subprocess.run([sys.executable, "-m", "livepolicy", *args, "--lock-timeout",
                            "90"], cwd=second, capture_output=True, text=True, timeout=240,
                           check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        events = parse_events(r.stdout)
        (resumed,) = [e for e in events if e["type"] == "journal_from_cluster"]
        assert "ConfigMap kube-system/livepolicy-apply-journal-" in resumed["@message"]
        assert any(e.get("recovered") for e in events), "the interrupted move was settled"
        assert events[-1]["changes"]["migrated"] == 3, events[-1]
        assert_each_pod_once(pods_on_agents(pool), facts, PLANNED)
        assert not unfinished_migrations(pool)
    finally:
        pool.stop()
