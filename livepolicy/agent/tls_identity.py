"""A TLS identity of one node's agent alone: its own key, its certificate on its pod.

A certificate shared by every agent lets a node whose root is compromised pose as any
other node's agent. Here each agent makes an ECDSA P-256 key of its own (kept in its state
directory, 0600, so a restart keeps the identity callers already trust) and a self-signed
certificate for its node name and addresses, and writes that certificate on its own pod
(annotation CERT_ANNOTATION). apply reads it there from the API server and trusts that one
certificate for that node (apply/kube_agents.py), and hands the destination's certificate
to the source for the transfer: no CA, nothing shared, and a node can only publish on its
own agent pod (the chart's admission policy).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_ANNOTATION = "livepolicy.io/agent-certificate"
VALID_DAYS = 3650  # the key is the identity; the pin, not the dates, is what callers check
TLS_DIR = "tls"


class Patcher(Protocol):
    """The part of `livepolicy.kube.client.KubeClient` publishing needs."""

    def request(self, method: str, path: str, *, body: Any = None,
                content_type: str = ...) -> Any: ...


@dataclass(frozen=True)
class Identity:
    """Where the agent's key and certificate are, and the certificate itself (PEM)."""

    cert_file: Path
    key_file: Path
    certificate: str

    @property
    def sha256(self) -> str:
        return certificate_sha256(self.certificate)


def certificate_sha256(pem: str) -> str:
    """SHA-256 of the DER certificate: what `openssl x509 -fingerprint -sha256` shows."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _names(node: str, ips: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = [x509.DNSName(node)]
    seen: set[str] = set()
    for text in ips:
        ip = ipaddress.ip_address(text)
        if ip.is_unspecified or str(ip) in seen:
            continue
        seen.add(str(ip))
        out.append(x509.IPAddress(ip))
    return out


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n.value) for n in ext}


def _spki(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    """This node's key: the one on disk, else a new one written there first."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key
    key = ec.generate_private_key(ec.SECP256R1())
    _write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return key


def ensure_identity(state_dir: Path, node: str, ips: Sequence[str]) -> Identity:
    """The agent's key and certificate under STATE_DIR/tls, made on first use.

    The certificate is made again (same key) when the node name or addresses it must name
    changed, e.g. a new node IP; its SHA-256 then changes and the agent republishes it.
    """
    d = state_dir / TLS_DIR
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    key_file, cert_file = d / "agent.key", d / "agent.crt"
    key = _key(key_file)
    names = _names(node, ips)
    wanted = {str(n.value) for n in names}
    if cert_file.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except ValueError:
            cert = None
        if (cert is not None and _sans(cert) == wanted
                and _spki(cert.public_key()) == _spki(key.public_key())):
            return Identity(cert_file, key_file, cert_file.read_text())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node[:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "livepolicy agent")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write_private(cert_file, pem)
    return Identity(cert_file, key_file, pem.decode())


def publish(client: Patcher, pod: str, identity: Identity) -> None:
    """Write the certificate on the agent's own pod (NAMESPACE/NAME), where apply reads it."""
    namespace, _, name = pod.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"--tls-publish-pod wants NAMESPACE/NAME, not {pod!r}")
    body = {"metadata": {"annotations": {CERT_ANNOTATION: identity.certificate}}}
    client.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}", body=body,
                   content_type="application/merge-patch+json")
