"""The Helm chart (deploy/helm/livepolicy) as helm renders it: lint, the objects, the exact
RBAC rules, the hardened security contexts, the controller's command contract, and an
agent started from the rendered arguments, token and certificate.

The render helpers here are shared with test_chart_apiserver.py, which applies the same
objects to the real kube-apiserver. helm is the real binary built by
scripts/setup-helm.sh; a missing binary fails the tests with that script's name.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from ruamel.yaml import YAML

import livepolicy
from livepolicy.agent import AgentClient, AgentError
from livepolicy.agent.main import build_parser
from livepolicy.agent.runtimes.kubelet_setup import kubelet_options
from tests.conftest import ROOT

CHART = ROOT / "deploy" / "helm" / "livepolicy"
SETUP_HELM = "scripts/setup-helm.sh"
RELEASE = "lp"
NAMESPACE = "livepolicy"

# The controller's command contract (issue 5): nothing more, nothing less.
CONTROLLER_ARGS = [
    "controller", "--policies-configmap", f"{NAMESPACE}/lp-livepolicy-policies",
    "--namespace", NAMESPACE, "--lease-name", "livepolicy-controller", "--lease-duration",
    "15", "--metrics-address", "0.0.0.0:8080", "--json"]

READ = ["get", "list", "watch"]
CONTROLLER_CLUSTER_RULES = [
    {"apiGroups": [""], "resources": ["nodes", "pods", "persistentvolumeclaims",
                                      "persistentvolumes"], "verbs": READ},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": READ},
    {"apiGroups": ["apps"], "resources": ["replicasets", "deployments", "statefulsets",
                                          "daemonsets"], "verbs": READ},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": READ},
    {"apiGroups": ["crd.k8s.amazonaws.com"], "resources": ["eniconfigs"], "verbs": READ},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]
CONTROLLER_NAMESPACE_RULES = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": READ},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "verbs": ["get", "create", "update"]},
]
CLUSTER_INFO_RULES = [
    {"apiGroups": [""], "resources": ["configmaps"],
     "resourceNames": ["livepolicy-cluster-info"], "verbs": ["get"]},
]
# The kubelet runtime's (docs/kubelet-runtime.md); criu and sim agents get no role.
AGENT_CLUSTER_RULES = [
    {"apiGroups": [""], "resources": ["nodes/checkpoint"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"],
     "verbs": ["get", "list", "create", "delete", "patch"]},
]
TOKENREVIEW_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
]
CRIU_CAPABILITIES = ["SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "CHECKPOINT_RESTORE",
                     "SYS_RESOURCE", "DAC_OVERRIDE", "DAC_READ_SEARCH", "SETUID", "SETGID",
                     "CHOWN", "FOWNER", "KILL", "SYS_CHROOT"]

# Non-default values: every switch the other way.
CUSTOM_VALUES: dict[str, Any] = {
    "fullnameOverride": "lpx",
    "commonLabels": {"team": "platform"},
    "image": {"repository": "registry.example/livepolicy", "digest": "sha256:" + "ab" * 32},
    "policies": {"files": {"only.yaml": (ROOT / "policies" / "settings.yaml").read_text()}},
    "controller": {"replicas": 3, "leaseName": "lp-leader", "leaseDurationSeconds": 30,
                   "metricsPort": 9090, "serviceMonitor": {"enabled": True},
                   "rbac": {"clusterInfo": False}, "priorityClassName": "system-cluster-critical",
                   "serviceAccount": {"annotations": {
                       "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/lp"}}},
    "agent": {"runtime": "criu", "privileged": True, "hostNetwork": False,
              "criu": {"dirtyTracking": False, "postCopy": True, "tcpEstablished": True},
              "token": "t" * 32, "auth": {"mode": "sharedToken"}, "stateDir": {"type": "tmpfs"},
              "tls": {"existingSecret": "agent-certs", "requireClientCert": True},
              # helm merges maps with the defaults; null drops a default key
              "nodeSelector": {"provisioner.cast.ai/managed-by": None,
                               "node.kubernetes.io/instance-type": "m5.large"},
              "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                               "effect": "NoSchedule"}],
              "extraArgs": ["--architecture", "amd64"]},
}


# -- helpers shared with test_chart_apiserver.py -------------------------------------------
def helm_binary() -> str:
    cache = os.environ.get("LIVEPOLICY_CACHE") or str(Path.home() / ".cache" / "livepolicy")
    path = Path(cache) / "bin" / "helm"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"helm not found at {path}: build it with `{SETUP_HELM}`")
    return str(path)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/livepolicy-helm/cache",
           "HELM_CONFIG_HOME": "/tmp/livepolicy-helm/config",
           "HELM_DATA_HOME": "/tmp/livepolicy-helm/data"}
    out = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({out.returncode}):\n"
                             f"{out.stdout}{out.stderr}")
    return out


def values_file(tmp: Path, values: dict[str, Any]) -> Path:
    path = tmp / f"values-{len(list(tmp.glob('values-*')))}.json"
    path.write_text(json.dumps(values))  # JSON is YAML
    return path


# `helm template` cannot read the cluster, so the chart refuses to generate the agents'
# certificate there unless told that a throwaway render is meant (docs/gitops.md); most
# tests here look at such renders.
EVERY_RENDER: dict[str, Any] = {"agent": {"generatedSecrets": "everyRender"}}


def template(tmp: Path, values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE,
             release: str = RELEASE, extra: tuple[str, ...] = (),
             generate: bool = True) -> str:
    """`helm template`'s output; `generate`: with agent.generatedSecrets=everyRender
    underneath `values`."""
    args = ["template", release, str(CHART), "--namespace", namespace, *extra]
    if generate:
        args += ["--values", str(values_file(tmp, EVERY_RENDER))]
    if values:
        args += ["--values", str(values_file(tmp, values))]
    return helm(*args).stdout


def render(tmp: Path, values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE,
           release: str = RELEASE, extra: tuple[str, ...] = (),
           generate: bool = True) -> list[dict[str, Any]]:
    """`helm template`: every object of the chart, in helm's install order."""
    out = template(tmp, values, namespace=namespace, release=release, extra=extra,
                   generate=generate)
    docs = YAML(typ="safe", pure=True).load_all(out)
    return [d for d in docs if d]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)]
    assert len(hits) == 1, f"{len(hits)} {kind} {name or ''} in {inventory(objs)}"
    return hits[0]


def inventory(objs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
                  for o in objs)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def secret_data(obj: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(obj["data"][key])


# -- lint ---------------------------------------------------------------------------------
def test_helm_lint_default_and_custom_values(tmp_path: Path) -> None:
    # The defaults generate nothing (per-node certificates, minted tokens): lint renders.
    out = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout and "random" not in out.stdout
    # lint cannot read a cluster: helm lint reports the chart's `fail` as information
    out = helm("lint", "--strict", str(CHART), "--set", "agent.tls.identity=shared")
    assert "would be new random values on every render" in out.stdout + out.stderr
    for gitops in ("agent.tls.certManager.enabled=true", "agent.tls.existingSecret=mine",
                   "agent.generatedSecrets=everyRender"):
        helm("lint", "--strict", str(CHART), "--set", gitops)
    out = helm("lint", "--strict", str(CHART), "--namespace", "ops",
               "--values", str(values_file(tmp_path, CUSTOM_VALUES)))
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize(("values", "message"), [
    ({"agent": {"token": "short"}}, "at '/agent/token'"),
    ({"agent": {"stateDir": {"type": "nfs"}}}, "at '/agent/stateDir/type'"),
    ({"controller": {"replica": 2}}, "additional properties 'replica' not allowed"),
    ({"agent": {"criu": {"capabilities": ["SYS_ADMIN", "sys_ptrace"]}}},
     "at '/agent/criu/capabilities/1'"),
    ({"agent": {"runtime": "runc"}}, "at '/agent/runtime'"),
    ({"controller": {"serviceAccount": {"create": False}}},
     "controller.serviceAccount.name is required"),
    ({"policies": {"existingConfigMap": "other/policies"}}, "must be in the release namespace"),
    ({"agent": {"tls": {"identity": "shared", "dnsNames": [], "ipAddresses": []}}},
     "give dnsNames or ipAddresses"),
    ({"agent": {"tls": {"identity": "perNode", "existingSecret": "mine"}}},
     "agent.tls.identity=perNode: each agent makes its own certificate"),
    ({"agent": {"tls": {"identity": "perNode", "requireClientCert": True}}},
     "agent.tls.requireClientCert (one CA for all agents) do not go with it"),
    ({"agent": {"tls": {"identity": "mine"}}}, "at '/agent/tls/identity'"),
    ({"agent": {"runtime": "criu", "criu": {"nodeConfig": ""}}}, "agent.criu.nodeConfig"),
    ({"agent": {"generatedSecrets": "always"}}, "at '/agent/generatedSecrets'"),
    ({"agent": {"tls": {"certManager": {"issuerRef": {"kind": "Vault"}}}}},
     "at '/agent/tls/certManager/issuerRef/kind'"),
    ({"agent": {"tls": {"certManager": {"enabled": True, "dnsNames": []}}}},
     "additional properties 'dnsNames' not allowed"),
    ({"agent": {"tls": {"certManager": {"enabled": True}, "dnsNames": []}}},
     "agent.tls.certManager: give agent.tls.dnsNames"),
    ({"controller": {"rbac": {"labelKey": "not a key"}}}, "at '/controller/rbac/labelKey'"),
    ({"agent": {"rbac": {"copies": {"allowHostNetwork": True}}}},
     "additional properties 'allowHostNetwork' not allowed"),
])
def test_bad_values_are_refused_with_the_value_named(tmp_path: Path, values: dict[str, Any],
                                                     message: str) -> None:
    out = helm("template", RELEASE, str(CHART), "--values",
               str(values_file(tmp_path, EVERY_RENDER)), "--values",
               str(values_file(tmp_path, values)), check=False)
    assert out.returncode == 1
    assert message in out.stderr, out.stderr
    assert "panic" not in out.stderr and "goroutine" not in out.stderr


# -- what the default install creates ------------------------------------------------------
def test_default_render_objects(tmp_path: Path) -> None:
    objs = render(tmp_path)
    ns, ctl, agent = NAMESPACE, "lp-livepolicy-controller", "lp-livepolicy-agent"
    assert inventory(objs) == sorted([
        ("ClusterRole", "", ctl), ("ClusterRole", "", agent),
        ("ClusterRole", "", f"{agent}-tokenreview"),
        ("ClusterRoleBinding", "", ctl), ("ClusterRoleBinding", "", agent),
        ("ClusterRoleBinding", "", f"{agent}-tokenreview"),
        ("ConfigMap", ns, "lp-livepolicy-policies"),
        ("DaemonSet", ns, agent), ("Deployment", ns, ctl),
        ("PodDisruptionBudget", ns, ctl),
        ("Role", ns, ctl), ("Role", "kube-system", f"{ctl}-cluster-info"),
        ("Role", ns, "lp-livepolicy-apply-token"),
        ("RoleBinding", ns, ctl), ("RoleBinding", "kube-system", f"{ctl}-cluster-info"),
        # No Secret: no shared token (agent.auth.mode), no shared key (agent.tls.identity)
        ("Service", ns, f"{ctl}-metrics"),
        ("ServiceAccount", ns, ctl), ("ServiceAccount", ns, agent),
        ("ServiceAccount", ns, "lp-livepolicy-apply"),
        ("ValidatingAdmissionPolicy", "", f"{agent}-own-node"),
        ("ValidatingAdmissionPolicyBinding", "", f"{agent}-own-node"),
        ("ValidatingAdmissionPolicy", "", f"{agent}-own-certificate"),
        ("ValidatingAdmissionPolicyBinding", "", f"{agent}-own-certificate"),
        ("ValidatingAdmissionPolicy", "", f"{ctl}-label-only"),
        ("ValidatingAdmissionPolicyBinding", "", f"{ctl}-label-only"),
    ])
    for o in objs:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == livepolicy.__version__
        assert labels["app.kubernetes.io/component"] in {"controller", "agent", "apply"}


def test_chart_versions_follow_livepolicy() -> None:
    chart = YAML(typ="safe", pure=True).load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == livepolicy.__version__


def test_default_policies_are_the_repository_policies(tmp_path: Path) -> None:
    cm = find(render(tmp_path), "ConfigMap", "lp-livepolicy-policies")
    yaml = YAML(typ="safe", pure=True)
    files = sorted(p.name for p in (ROOT / "policies").glob("*.yaml"))
    assert sorted(cm["data"]) == files
    for name in files:  # the chart's bundled copy is the repository's file, byte for byte
        text = (ROOT / "policies" / name).read_text()
        assert (CHART / "files" / "policies" / name).read_text() == text, name
        assert cm["data"][name] == text
        assert list(yaml.load_all(cm["data"][name]))


def test_controller_runs_the_command_contract(tmp_path: Path) -> None:
    dep = find(render(tmp_path), "Deployment")
    assert dep["spec"]["replicas"] == 2
    spec = pod_spec(dep)
    (c,) = spec["containers"]
    assert c["command"] == ["livepolicy"]
    assert c["args"] == CONTROLLER_ARGS
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert spec["serviceAccountName"] == "lp-livepolicy-controller"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    svc = find(render(tmp_path), "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics",
                                     "protocol": "TCP"}]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_controller_is_hardened(tmp_path: Path) -> None:
    spec = pod_spec(find(render(tmp_path), "Deployment"))
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 65532,
                                       "runAsGroup": 65532, "fsGroup": 65532,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    (c,) = spec["containers"]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True, "privileged": False,
                                    "capabilities": {"drop": ["ALL"]}}
    assert "hostPID" not in spec and "hostNetwork" not in spec
    assert [v["name"] for v in spec["volumes"]] == ["tmp"]  # writable /tmp only


def test_rbac_rules_are_exactly_least_privilege(tmp_path: Path) -> None:
    objs = render(tmp_path)
    ctl, agent = "lp-livepolicy-controller", "lp-livepolicy-agent"
    assert find(objs, "ClusterRole", ctl)["rules"] == CONTROLLER_CLUSTER_RULES
    role = next(o for o in objs if o["kind"] == "Role" and o["metadata"]["name"] == ctl)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == CONTROLLER_NAMESPACE_RULES
    assert find(objs, "Role", f"{ctl}-cluster-info")["rules"] == CLUSTER_INFO_RULES
    assert find(objs, "ClusterRole", agent)["rules"] == AGENT_CLUSTER_RULES
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for b in (o for o in objs if o["kind"] == kind):
            name = b["metadata"]["name"]
            sa = agent if name.startswith(agent) else ctl
            assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa,
                                      "namespace": NAMESPACE}]
            assert b["roleRef"]["name"] == name
    roles = [o for o in objs if o["kind"] in ("ClusterRole", "Role")]
    verbs = {v for o in roles if not o["metadata"]["name"].startswith(agent)
             for r in o["rules"] for v in r["verbs"]}
    assert verbs == {"get", "list", "watch", "patch", "create", "update"}  # no delete, no *
    assert not any("secrets" in r["resources"] or "*" in r["resources"] or "*" in r["verbs"]
                   for o in roles for r in o["rules"])
    assert find(objs, "ClusterRole", f"{agent}-tokenreview")["rules"] == TOKENREVIEW_RULES
    assert find(objs, "Role", "lp-livepolicy-apply-token")["rules"] == [
        {"apiGroups": [""], "resources": ["serviceaccounts/token"],
         "resourceNames": ["lp-livepolicy-apply"], "verbs": ["create"]}]
    # criu and sim agents call the API only to review apply's tokens and to write their
    # own certificate on their own pod (a Role of the release namespace, narrowed to that
    # one annotation of that one pod by admission); with a shared token and a shared
    # certificate they call none: no role, no token in the pod.
    for runtime in ("criu", "sim"):
        other = render(tmp_path, {"agent": {"runtime": runtime}})
        assert [o["rules"] for o in other if o["kind"] == "ClusterRole"
                and o["metadata"]["name"].startswith(agent)] == [TOKENREVIEW_RULES]
        assert find(other, "Role", f"{agent}-certificate")["rules"] == [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
        assert find(other, "Role", f"{agent}-certificate")["metadata"]["namespace"] == NAMESPACE
        shared = render(tmp_path, {"agent": {"runtime": runtime, "tls": {"identity": "shared"},
                                             "auth": {"mode": "sharedToken"}}})
        assert not [o for o in shared if o["kind"].endswith(("Role", "RoleBinding"))
                    and o["metadata"]["name"].startswith(agent)]
        assert pod_spec(find(shared, "DaemonSet"))["automountServiceAccountToken"] is False
        assert find(shared, "ServiceAccount", agent)["automountServiceAccountToken"] is False


def test_kubelet_agent_is_root_without_capabilities(tmp_path: Path) -> None:
    """The default runtime: the kubelet checkpoints and containerd restores, so the agent
    needs root (file ownership on the host paths) and no capability at all."""
    ds = find(render(tmp_path), "DaemonSet")
    spec = pod_spec(ds)
    assert "hostPID" not in spec and spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["automountServiceAccountToken"] is True  # the kubelet and the API
    assert spec["nodeSelector"] == {"provisioner.cast.ai/managed-by": "cast.ai"}
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["securityContext"] == {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    (c,) = spec["containers"]
    assert c["securityContext"] == {"readOnlyRootFilesystem": True, "privileged": False,
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}}
    host = {v["name"]: v["hostPath"] for v in spec["volumes"] if "hostPath" in v}
    assert host == {
        "state": {"path": "/var/lib/livepolicy-agent", "type": "DirectoryOrCreate"},
        "containerd-socket": {"path": "/run/containerd/containerd.sock", "type": "Socket"},
        "kubelet-checkpoints": {"path": "/var/lib/kubelet/checkpoints",
                                "type": "DirectoryOrCreate"},
        "containerd-config": {"path": "/etc/containerd/config.toml", "type": "File"},
    }
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["containerd-config"]["readOnly"] is True
    # No Secret at all: apply's tokens name one node each, and each agent has its own key.
    assert not [v for v in spec["volumes"] if "secret" in v]
    assert "--token-file" not in c["args"] and "--tls-cert" not in c["args"]
    assert c["args"][c["args"].index("--tls-publish-pod") + 1] == "$(POD_NAMESPACE)/$(POD_NAME)"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]
           if "valueFrom" in e}
    assert env == {"NODE_NAME": "spec.nodeName", "POD_IP": "status.podIP",
                   "HOST_IP": "status.hostIP", "POD_NAME": "metadata.name",
                   "POD_NAMESPACE": "metadata.namespace"}
    assert c["args"][c["args"].index("--auth-allow") + 1] == (
        f"system:serviceaccount:{NAMESPACE}:lp-livepolicy-apply")
    shared = pod_spec(find(render(tmp_path, {"agent": {"auth": {"mode": "sharedToken"},
                                                       "tls": {"identity": "shared"}}}),
                           "DaemonSet"))
    (c,) = shared["containers"]
    secrets = {v["name"]: v["secret"] for v in shared["volumes"] if "secret" in v}
    assert {s["defaultMode"] for s in secrets.values()} == {0o400}  # written 256
    assert secrets["token"]["secretName"] == "lp-livepolicy-agent-token"
    assert secrets["tls"]["secretName"] == "lp-livepolicy-agent-tls"
    # The token is a file, never an argument or an environment variable.
    assert not any("TOKEN" in e["name"] for e in c["env"])
    assert c["args"][c["args"].index("--token-file") + 1] == "/etc/livepolicy/agent-token/token"
    assert "tcpSocket" in c["readinessProbe"] and "tcpSocket" in c["livenessProbe"]


def test_kubelet_agent_keeping_addresses_gets_exactly_what_that_needs(tmp_path: Path) -> None:
    """keepPodAddress: the host PID namespace and three capabilities to cut a moved pod's
    network, the plugin's data directory, and an init container installing the plugin
    with nothing at all; the flags are real agent flags."""
    ds = find(render(tmp_path, {"agent": {"kubelet": {"keepPodAddress": {"enabled": True}}}}),
              "DaemonSet")
    spec = pod_spec(ds)
    assert spec["hostPID"] is True
    (c,) = spec["containers"]
    assert c["securityContext"]["capabilities"] == {
        "drop": ["ALL"], "add": ["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "NET_RAW"]}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    (init,) = spec["initContainers"]
    assert init["command"][-3:] == ["livepolicy.agent.runtimes.kubelet_ipam", "install",
                                    "/host/cni-bin"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    host = {v["name"]: v["hostPath"] for v in spec["volumes"] if "hostPath" in v}
    assert host["ipam-dir"] == {"path": "/var/lib/cni/livepolicy", "type": "DirectoryOrCreate"}
    assert host["cni-bin"] == {"path": "/opt/cni/bin", "type": "Directory"}
    env = {"NODE_NAME": "n1", "POD_IP": "10.0.1.2", "HOST_IP": "10.0.1.9",
           "POD_NAMESPACE": NAMESPACE, "POD_NAME": "agent-x"}
    kubelet = kubelet_options(build_parser().parse_args(agent_args(ds, env, {})))
    assert kubelet.keep_address and str(kubelet.ipam_dir) == "/var/lib/cni/livepolicy"
    # Off by default, and never for the other runtimes.
    for values in ({}, {"agent": {"runtime": "criu", "kubelet": {
            "keepPodAddress": {"enabled": True}}}}):
        spec = pod_spec(find(render(tmp_path, values), "DaemonSet"))
        assert "initContainers" not in spec
        assert "--kubelet-keep-pod-address" not in spec["containers"][0]["args"]


def test_criu_agent_has_what_criu_needs_and_no_more(tmp_path: Path) -> None:
    ds = find(render(tmp_path, {"agent": {"runtime": "criu"}}), "DaemonSet")
    spec = pod_spec(ds)
    assert spec["hostPID"] is True
    assert spec["automountServiceAccountToken"] is True  # only for its TokenReviews
    assert spec["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    assert spec["securityContext"]["appArmorProfile"] == {"type": "Unconfined"}
    assert spec["securityContext"]["runAsUser"] == 0
    (c,) = spec["containers"]
    assert c["securityContext"] == {"readOnlyRootFilesystem": True, "privileged": False,
                                    "allowPrivilegeEscalation": True,
                                    "capabilities": {"drop": ["ALL"],
                                                     "add": CRIU_CAPABILITIES}}
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host == {"state": "/var/lib/livepolicy-agent",
                    "containerd-socket": "/run/containerd/containerd.sock",
                    "kubelet-checkpoints": "/var/lib/kubelet/checkpoints"}
    assert c["args"][c["args"].index("--criu-node-config") + 1] == (
        "/etc/livepolicy/node/network.json")
    assert not [a for a in c["args"] if str(a).startswith("--kubelet")]


def test_sim_agent_needs_nothing_from_the_host(tmp_path: Path) -> None:
    spec = pod_spec(find(render(tmp_path, {"agent": {"runtime": "sim"}}), "DaemonSet"))
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_custom_values_render(tmp_path: Path) -> None:
    objs = render(tmp_path, CUSTOM_VALUES, namespace="ops")
    dep = find(objs, "Deployment", "lpx-controller")
    assert dep["spec"]["replicas"] == 3
    (c,) = pod_spec(dep)["containers"]
    assert c["image"] == "registry.example/livepolicy@sha256:" + "ab" * 32
    assert c["args"] == ["controller", "--policies-configmap", "ops/lpx-policies",
                         "--namespace", "ops", "--lease-name", "lp-leader",
                         "--lease-duration", "30", "--metrics-address", "0.0.0.0:9090",
                         "--json"]
    assert pod_spec(dep)["priorityClassName"] == "system-cluster-critical"
    assert sorted(find(objs, "ConfigMap")["data"]) == ["only.yaml"]
    sm = find(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert not [o for o in objs if o["metadata"].get("namespace") == "kube-system"]
    sa = find(objs, "ServiceAccount", "lpx-controller")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("role/lp")
    assert all(o["metadata"]["labels"]["team"] == "platform" for o in objs)

    ds = find(objs, "DaemonSet", "lpx-agent")
    spec = pod_spec(ds)
    assert spec["hostNetwork"] is False and "dnsPolicy" not in spec and spec["hostPID"]
    (a,) = spec["containers"]
    assert a["securityContext"] == {"readOnlyRootFilesystem": True, "privileged": True}
    assert spec["nodeSelector"] == {"node.kubernetes.io/instance-type": "m5.large"}
    state = next(v for v in spec["volumes"] if v["name"] == "state")
    assert state == {"name": "state", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}}
    tls = next(v for v in spec["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "agent-certs"
    for flag in ("--no-dirty-tracking", "--post-copy", "--tcp-established", "--tls-client-ca"):
        assert flag in a["args"]
    assert a["args"][-2:] == ["--architecture", "amd64"]
    # The given token is used; the existing TLS Secret is not the chart's to create.
    token = find(objs, "Secret", "lpx-agent-token")
    assert secret_data(token, "token") == b"t" * 32
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Secret"] == ["lpx-agent-token"]


def test_components_can_be_turned_off(tmp_path: Path) -> None:
    only_agent = render(tmp_path, {"controller": {"enabled": False}})
    assert {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in only_agent} == {
        "agent", "apply"}
    only_ctl = render(tmp_path, {"agent": {"enabled": False},
                                 "policies": {"existingConfigMap": "my-policies"}})
    assert {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in only_ctl} == {
        "controller"}
    assert not [o for o in only_ctl if o["kind"] == "ConfigMap"]
    (c,) = pod_spec(find(only_ctl, "Deployment"))["containers"]
    assert c["args"][1:3] == ["--policies-configmap", f"{NAMESPACE}/my-policies"]


# -- the agent's rendered arguments, token and certificate work --------------------------
def agent_args(ds: dict[str, Any], env: dict[str, str], mounts: dict[str, Path]) -> list[str]:
    """The container's args as the kubelet runs them: $(VAR) expanded, mounts relocated."""
    (c,) = pod_spec(ds)["containers"]
    assert c["command"] == ["livepolicy"] and c["args"][0] == "agent"
    out = []
    for raw in c["args"][1:]:
        arg = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], str(raw))
        for inside, outside in mounts.items():
            if arg.startswith(inside):
                arg = str(outside) + arg[len(inside):]
        out.append(arg)
    return out


def test_default_agent_arguments_are_real_agent_flags(tmp_path: Path) -> None:
    ds = find(render(tmp_path), "DaemonSet")
    env = {"NODE_NAME": "ip-10-0-1-2.ec2.internal", "POD_IP": "10.0.1.2", "HOST_IP": "10.0.1.9",
           "POD_NAMESPACE": NAMESPACE, "POD_NAME": "lp-livepolicy-agent-x7k2p"}
    args = agent_args(ds, env, {})
    ns = build_parser().parse_args(args)  # argparse exits 2 on an unknown flag or choice
    assert ns.runtime == "kubelet" and ns.port == 7474 and ns.address == "10.0.1.2"
    assert ns.max_image_bytes == 256 * 2**20
    assert ns.tls_self_signed and ns.tls_ca is None and ns.tls_client_ca is None
    assert ns.tls_ip == ["10.0.1.2", "10.0.1.9"]
    kubelet = kubelet_options(ns)
    assert kubelet.url == "https://10.0.1.9:10250" and not kubelet.problems()
    assert str(kubelet.ca_file) == "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    assert str(kubelet.token_file) == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert str(kubelet.checkpoints_dir) == "/var/lib/kubelet/checkpoints"
    assert kubelet.containerd_address == "/run/containerd/containerd.sock"
    assert str(kubelet.containerd_config) == "/etc/containerd/config.toml"
    assert kubelet.kubeconfig is None  # in-cluster
    assert ns.tls_publish_pod == f"{NAMESPACE}/lp-livepolicy-agent-x7k2p"
    shared = build_parser().parse_args(agent_args(find(render(tmp_path, {"agent": {
        "tls": {"identity": "shared"}}}), "DaemonSet"), env, {}))
    assert str(shared.tls_ca) == "/etc/livepolicy/agent-tls/ca.crt" and not shared.tls_self_signed
    ns = build_parser().parse_args(agent_args(find(render(tmp_path, {"agent": {
        "runtime": "criu", "criu": {"tcpEstablished": True}}}), "DaemonSet"), env, {}))
    assert ns.runtime == "criu" and ns.tcp_established and ns.dirty_tracking is None
    assert str(ns.criu_node_config) == "/etc/livepolicy/node/network.json"


@pytest.fixture()
def rendered_agent(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """An agent started from the DaemonSet's arguments with the chart's generated token
    and certificate (sim runtime, on loopback); yields (url, token, CA file)."""
    objs = render(tmp_path, {"agent": {"runtime": "sim", "hostNetwork": False, "tls": {
        "identity": "shared", "dnsNames": ["localhost"], "ipAddresses": ["127.0.0.1"]},
        "auth": {"mode": "sharedToken"}}})
    token_dir, tls_dir, state = tmp_path / "token", tmp_path / "tls", tmp_path / "state"
    for d in (token_dir, tls_dir):
        d.mkdir(mode=0o700)
    token = secret_data(find(objs, "Secret", "lp-livepolicy-agent-token"), "token").decode()
    (token_dir / "token").write_text(token)
    tls = find(objs, "Secret", "lp-livepolicy-agent-tls")
    assert tls["type"] == "kubernetes.io/tls"
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tls_dir / key).write_bytes(secret_data(tls, key))
    args = agent_args(find(objs, "DaemonSet"), {"NODE_NAME": "node-a", "POD_IP": "127.0.0.1"},
                      {"/etc/livepolicy/agent-token": token_dir,
                       "/etc/livepolicy/agent-tls": tls_dir, "/var/lib/livepolicy-agent": state})
    port = args.index("--port") + 1
    args[port] = "0"
    proc = subprocess.Popen([sys.executable, "-m", "livepolicy.agent", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        yield json.loads(line)["url"], token, tls_dir / "ca.crt"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_agent_serves_https_with_the_charts_token_and_certificate(
        rendered_agent: tuple[str, str, Path]) -> None:
    url, token, ca = rendered_agent
    assert url.startswith("https://127.0.0.1:")
    ctx = ssl.create_default_context(cafile=str(ca))  # hostname verified against the SAN
    health = AgentClient(url, token, ssl_context=ctx).health()
    assert health["status"] == "ok" and health["node"] == "node-a"
    with pytest.raises(AgentError) as err:
        AgentClient(url, "x" * 32, ssl_context=ctx).health()
    assert err.value.status == 401
    cert = x509.load_pem_x509_certificate(ca.with_name("tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]


# -- secrets that stay the same under `helm template` (GitOps) -----------------------------
GITOPS_MODES: dict[str, dict[str, Any]] = {
    "existing-secrets": {"agent": {"tls": {"existingSecret": "agent-certs"},
                                   "auth": {"mode": "sharedToken"},
                                   "existingTokenSecret": "agent-token"}},
    "cert-manager": {"agent": {"tls": {"certManager": {"enabled": True}}}},
    "cert-manager-issuer": {"agent": {"tls": {"certManager": {"enabled": True, "issuerRef": {
        "name": "platform-ca", "kind": "ClusterIssuer"}}}}},
    "given-token": {"agent": {"auth": {"mode": "sharedToken"}, "token": "g" * 32,
                              "tls": {"existingSecret": "agent-certs"}}},
    "no-tls": {"agent": {"tls": {"enabled": False}}},
    "defaults": {},  # per-node certificates, minted tokens: nothing to generate
}


@pytest.mark.parametrize("mode", sorted(GITOPS_MODES))
def test_gitops_modes_render_byte_identical(tmp_path: Path, mode: str) -> None:
    first = template(tmp_path, GITOPS_MODES[mode], generate=False)
    assert template(tmp_path, GITOPS_MODES[mode], generate=False) == first


def test_generated_secrets_are_refused_offline_and_random_when_asked(tmp_path: Path) -> None:
    out = helm("template", RELEASE, str(CHART), "--set", "agent.tls.identity=shared",
               check=False)
    assert out.returncode == 1
    assert ("this render cannot read the cluster (helm template, helm lint, Argo CD), so the "
            "agents' CA and TLS key (agent.tls) would be new random values") in out.stderr
    out = helm("template", RELEASE, str(CHART), "--set", "agent.tls.existingSecret=x",
               "--set", "agent.auth.mode=sharedToken", check=False)
    assert out.returncode == 1 and "the shared agent token (agent.token)" in out.stderr
    assert "agent.existingTokenSecret or agent.token" in out.stderr
    # everyRender: what the issue saw, now only when asked for
    shared = {"agent": {"tls": {"identity": "shared"}}}
    assert template(tmp_path, shared) != template(tmp_path, shared)


def test_existing_secrets_render_no_secret_and_are_referenced(tmp_path: Path) -> None:
    objs = render(tmp_path, GITOPS_MODES["existing-secrets"], generate=False)
    assert not [o for o in objs if o["kind"] == "Secret"]
    spec = pod_spec(find(objs, "DaemonSet"))
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert secrets == {"token": "agent-token", "tls": "agent-certs"}
    # The controller reads no agent secret at all (it holds no secret volume or right).
    ctl = pod_spec(find(objs, "Deployment"))
    assert not [v for v in ctl["volumes"] if "secret" in v]


def test_cert_manager_objects(tmp_path: Path) -> None:
    """The self-signed chain: Issuer (selfSigned) -> CA Certificate (isCA) -> CA Issuer ->
    the agents' Certificate into the Secret the DaemonSet mounts; no Secret rendered.
    Field names and values are cert-manager.io/v1's documented ones
    (cert-manager.io/docs/reference/api-docs); test_chart_apiserver checks them against a
    structural CRD of those fields with strict field validation."""
    objs = render(tmp_path, GITOPS_MODES["cert-manager"], generate=False)
    agent = "lp-livepolicy-agent"
    assert not [o for o in objs if o["kind"] == "Secret"]
    assert find(objs, "Issuer", f"{agent}-selfsigned")["spec"] == {"selfSigned": {}}
    ca = find(objs, "Certificate", f"{agent}-ca")["spec"]
    assert ca["isCA"] is True and ca["secretName"] == f"{agent}-ca"
    assert ca["issuerRef"] == {"name": f"{agent}-selfsigned", "kind": "Issuer",
                               "group": "cert-manager.io"}
    assert find(objs, "Issuer", f"{agent}-ca")["spec"] == {"ca": {"secretName": f"{agent}-ca"}}
    tls = find(objs, "Certificate", f"{agent}-tls")["spec"]
    assert tls["secretName"] == f"{agent}-tls"
    assert tls["dnsNames"] == ["*.ec2.internal", "*.us-east-1.compute.internal"]
    assert tls["usages"] == ["digital signature", "key encipherment", "server auth",
                             "client auth"]
    assert tls["duration"] == f"{825 * 24}h"
    assert tls["issuerRef"] == {"name": f"{agent}-ca", "kind": "Issuer",
                                "group": "cert-manager.io"}
    spec = pod_spec(find(objs, "DaemonSet"))
    (tls_volume,) = [v["secret"] for v in spec["volumes"] if "secret" in v]
    assert tls_volume["secretName"] == f"{agent}-tls"
    assert [i["key"] for i in tls_volume["items"]] == ["tls.crt", "tls.key", "ca.crt"]
    own = render(tmp_path, GITOPS_MODES["cert-manager-issuer"], generate=False)
    assert [o["kind"] for o in own if o["kind"] in ("Issuer", "Certificate")] == ["Certificate"]
    assert find(own, "Certificate")["spec"]["issuerRef"] == {
        "name": "platform-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
