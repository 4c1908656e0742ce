"""Per-node TLS identities (agent/tls_identity.py) over real HTTPS between real agents:
each agent its own key, the source trusting only the certificate apply hands it for the
destination, and a restart keeping the identity callers trust."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from livepolicy.agent import AgentClient, AgentError
from livepolicy.agent.tls_identity import Identity, certificate_sha256, ensure_identity

from .conftest import Agent, Migration


def _https_agent(make_agent: Callable[..., Agent], tmp: Path, node: str) -> tuple[Agent,
                                                                                Identity]:
    identity = ensure_identity(tmp / f"{node}-state", node, ["127.0.0.1"])
    agent = make_agent(node, tls_cert_file=identity.cert_file, tls_key_file=identity.key_file)
    ctx = ssl.create_default_context(cadata=identity.certificate)
    agent.client = AgentClient(agent.url, agent.token, timeout=10, ssl_context=ctx)
    return agent, identity


def test_identity_is_made_once_and_names_the_node(tmp_path: Path) -> None:
    first = ensure_identity(tmp_path, "ip-10-0-1-5.ec2.internal", ["10.0.1.5", "0.0.0.0"])
    cert = x509.load_pem_x509_certificate(first.certificate.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["ip-10-0-1-5.ec2.internal"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.1.5"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert os.stat(tmp_path / "tls").st_mode & 0o777 == 0o700
    assert os.stat(first.key_file).st_mode & 0o777 == 0o600
    # A restart: the same key and certificate, so the pin callers hold stays valid.
    assert ensure_identity(tmp_path, "ip-10-0-1-5.ec2.internal", ["10.0.1.5"]) == first
    # A new address: a new certificate for the same key.
    moved = ensure_identity(tmp_path, "ip-10-0-1-5.ec2.internal", ["10.0.1.6"])
    assert moved.sha256 != first.sha256 and moved.key_file.read_bytes() == (
        first.key_file.read_bytes())
    assert certificate_sha256(moved.certificate) == moved.sha256
    # Two nodes never share a key.
    other = ensure_identity(tmp_path / "b", "ip-10-0-1-6.ec2.internal", ["10.0.1.6"])
    assert other.key_file.read_bytes() != first.key_file.read_bytes()


def test_source_trusts_only_the_destination_certificate_it_is_given(
        make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """The destination's own certificate makes the transfer; another node's certificate
    (n3's: what a node posing as n2 would hold) fails the handshake, so the upload token
    never reaches anyone, and the migration is still whole on the source."""
    (src, _), (dst, dst_id) = (_https_agent(make_agent, tmp_path, n) for n in ("n1", "n2"))
    _, n3_id = _https_agent(make_agent, tmp_path, "n3")
    m = Migration(src, dst)
    m.create_pod()
    m.prepare()
    m.checkpoint()
    with pytest.raises(AgentError) as err:
        src.client.transfer(m.mid, destination=dst.url, token=m.upload,
                            destination_certificate=n3_id.certificate)
    assert err.value.status == 502 and err.value.code == "peer_unreachable"
    assert "certificate verify failed" in err.value.message
    assert dst.client.status(m.mid)["phase"] == "prepared"  # nothing arrived
    out = src.client.transfer(m.mid, destination=dst.url, token=m.upload,
                              destination_certificate=dst_id.certificate)
    assert out["bytes"] > 0
    dst.client.restore(m.mid)
    assert dst.client.verify(m.mid)["ok"] is True
    src.client.commit(m.mid)
    dst.client.commit(m.mid)
    assert m.pods(dst) and not m.pods(src)


def test_source_without_a_pin_checks_the_system_store(
        make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """No certificate and no --tls-ca: a self-signed destination is not trusted."""
    (src, _), (dst, _) = (_https_agent(make_agent, tmp_path, n) for n in ("n1", "n2"))
    m = Migration(src, dst)
    m.create_pod()
    m.prepare()
    m.checkpoint()
    with pytest.raises(AgentError) as err:
        m.transfer()
    assert err.value.code == "peer_unreachable" and "certificate verify failed" in (
        err.value.message)
    with pytest.raises(AgentError) as err:
        src.client.transfer(m.mid, destination=dst.url, token=m.upload,
                            destination_certificate="not a certificate")
    assert err.value.status == 400 and "destination_certificate" in err.value.message


def test_agent_flags_make_and_keep_the_identity(tmp_path: Path) -> None:
    """`--tls-self-signed` serves HTTPS with the identity in STATE_DIR/tls; flags that
    would give another certificate are refused with a one-line reason."""
    state = tmp_path / "state"
    token = tmp_path / "token"
    token.write_text("t" * 32)
    base = [sys.executable, "-m", "livepolicy.agent", "--node", "n1", "--port", "0",
            "--token-file", str(token), "--state-dir", str(state)]
    bad = subprocess.run([*base, "--tls-self-signed", "--tls-cert", str(token)],
                         capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode == 2
    assert "--tls-self-signed makes the certificate" in bad.stderr and "Traceback" not in (
        bad.stderr)
    bad = subprocess.run([*base, "--tls-publish-pod", "ns/p"], capture_output=True,
                         text=True, timeout=30, check=False)
    assert bad.returncode == 2 and "go with --tls-self-signed" in bad.stderr
    proc = subprocess.Popen([*base, "--tls-self-signed", "--tls-ip", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert '"url": "https://127.0.0.1:' in line, proc.stderr.read() if proc.stderr else ""
        url = line.split('"url": "')[1].split('"')[0]
        pem = (state / "tls" / "agent.crt").read_text()
        ctx = ssl.create_default_context(cadata=pem)
        assert AgentClient(url, "t" * 32, ssl_context=ctx).health()["node"] == "n1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
