"""`livepolicy controller` option errors: one located line and exit 1, never a traceback;
and the in-cluster configuration wins inside a pod when no kubeconfig is named."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from livepolicy.cli.controller_cmds import default_namespace
from livepolicy.cli.main import cli
from livepolicy.kube.client import load_configuration
from livepolicy.kube.errors import KubeConfigError


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["controller", *args], catch_exceptions=False)


def _kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kc.json"
    path.write_bytes(orjson.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return path


@pytest.mark.parametrize(("args", "message"), [
    ((), "give exactly one of --policies DIR and --policies-configmap"),
    (("--policies", "p", "--policies-configmap", "a/b"), "give exactly one of"),
    (("--policies-configmap", "just-a-name"), "expected NAMESPACE/NAME, got 'just-a-name'"),
    (("--policies-configmap", "a/b/c"), "expected NAMESPACE/NAME"),
    (("--policies", "p", "--metrics-address", "8080"), "expected HOST:PORT, got '8080'"),
    (("--policies", "p", "--kubeconfig", "/nonexistent/kc"),
     "kubeconfig file not found: /nonexistent/kc"),
])
def test_option_errors(args: tuple[str, ...], message: str) -> None:
    r = run(*args)
    assert r.exit_code == 1
    assert message in r.output
    assert "Traceback" not in r.output


def test_metrics_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run("--kubeconfig", str(_kubeconfig(tmp_path)), "--policies", str(tmp_path),
                "--metrics-address", f"127.0.0.1:{port}")
    assert r.exit_code == 1
    assert f"--metrics-address: cannot listen on 127.0.0.1:{port}" in r.output


def test_in_cluster_wins_inside_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path)))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    # `label` and `plan` keep the kubeconfig chain...
    assert load_configuration()[1].server == "https://127.0.0.1:1"
    # ...the controller uses the pod's service account (absent here: a clear error).
    with pytest.raises(KubeConfigError, match="in-cluster configuration is unusable"):
        load_configuration(prefer_in_cluster=True)
    assert load_configuration(str(_kubeconfig(tmp_path)), prefer_in_cluster=True)[1] \
        .server == "https://127.0.0.1:1"  # unless a kubeconfig is named


def test_default_namespace(tmp_path: Path) -> None:
    assert default_namespace(tmp_path / "missing") == "livepolicy-system"
    (tmp_path / "ns").write_text("ops\n")
    assert default_namespace(tmp_path / "ns") == "ops"
