"""Optional HTTPS with mutual TLS, on top of the bearer token (agent to agent too)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from livepolicy.agent import AgentClient, AgentUnreachable

from .conftest import Agent, Migration


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and one leaf (server+client auth, SAN 127.0.0.1) shared by all agents."""
    d = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test-ca")).issuer_name(_name("test-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("agent")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "agent.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    _write_key(key, d / "agent.key")
    return d


def _tls_agent(make_agent: Callable[..., Agent], pki: Path, node: str) -> Agent:
    agent = make_agent(node, tls_cert_file=pki / "agent.pem", tls_key_file=pki / "agent.key",
                       tls_client_ca_file=pki / "ca.pem", tls_ca_file=pki / "ca.pem")
    assert agent.url.startswith("https://")
    agent.client = AgentClient(agent.url, agent.token, timeout=5, ssl_context=_ctx(pki))
    return agent


def _ctx(pki: Path, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if with_cert:
        ctx.load_cert_chain(pki / "agent.pem", pki / "agent.key")
    return ctx


def test_mutual_tls_migration(make_agent: Callable[..., Agent], pki: Path) -> None:
    m = Migration(_tls_agent(make_agent, pki, "n1"), _tls_agent(make_agent, pki, "n2"))
    assert m.src.client.capabilities()["tls"] is True
    m.create_pod()
    m.prepare()
    m.checkpoint()
    m.transfer()  # agent to agent over mutual TLS
    m.dst.client.restore(m.mid)
    assert m.dst.client.verify(m.mid)["ok"]
    m.src.client.commit(m.mid)


def test_tls_refuses_clients_without_certificate_or_tls(make_agent: Callable[..., Agent],
                                                         pki: Path) -> None:
    agent = _tls_agent(make_agent, pki, "n1")
    no_cert = AgentClient(agent.url, agent.token, timeout=2, ssl_context=_ctx(pki, False))
    with pytest.raises(AgentUnreachable):
        no_cert.health()
    plain = AgentClient(agent.url.replace("https", "http"), agent.token, timeout=2)
    with pytest.raises(AgentUnreachable):
        plain.health()
    assert agent.client.health()["status"] == "ok"


def test_agents_file_trusts_its_ca_and_presents_a_client_certificate(
        make_agent: Callable[..., Agent], pki: Path, tmp_path: Path) -> None:
    """`apply --agents` reaches agents behind a private CA with mutual TLS (the chart's)."""
    from livepolicy.apply.agents_file import StaticAgents

    agent = _tls_agent(make_agent, pki, "n1")
    token = tmp_path / "token"
    token.write_text(agent.token)
    path = tmp_path / "agents.yaml"
    path.write_text(f"n1:\n  url: {agent.url}\n  tokenFile: {token}\n  caFile: {pki / 'ca.pem'}\n"
                    f"  certFile: {pki / 'agent.pem'}\n  keyFile: {pki / 'agent.key'}\n")
    ep = StaticAgents(path).endpoint("n1")
    assert AgentClient(ep.url, ep.token, timeout=5, ssl_context=ep.ssl_context
                       ).health()["status"] == "ok"
    path.write_text(f"n1:\n  url: {agent.url}\n  tokenFile: {token}\n")  # system store only
    ep = StaticAgents(path).endpoint("n1")
    with pytest.raises(AgentUnreachable):
        AgentClient(ep.url, ep.token, timeout=5, ssl_context=ep.ssl_context).health()
