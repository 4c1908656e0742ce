"""A real kube-apiserver + etcd on loopback for livepolicy's integration tests.

Why this exists: livepolicy talks to the Kubernetes API, and fakes drift from
the real server's validation, RBAC and admission behaviour. controller-runtime's
envtest solves this by running the real binaries; this module does the same in
Python, following the facts in ``shared/design/kube-apiserver-for-tests.md``
(section 5). There is no controller-manager, scheduler or kubelet: objects are
stored and validated, but nothing reconciles them (no default ServiceAccount,
no Pod scheduling, no garbage collection).

The binaries are built from pinned sources by ``scripts/setup-kube-testenv.sh``
(this project's machines reach package registries only, so release tarballs
cannot be downloaded). They are found through ``$LIVEPOLICY_KUBE_BIN`` or
``${LIVEPOLICY_CACHE:-~/.cache/livepolicy}/bin``. When they are missing we raise
:class:`KubeBinariesMissingError` instead of skipping: a silently skipped
integration suite looks green while testing nothing.

Only the standard library and ``cryptography`` are used here, so the module can
be imported without the ``kubernetes`` client; tests pick their own client and
point it at :attr:`KubeTestEnv.kubeconfig_path`.

Typical use as a pytest fixture (wrap :func:`kube_test_env`)::

    @pytest.fixture(scope="module")
    def kube_env() -> Iterator[KubeTestEnv]:
        yield from kube_test_env()
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import functools
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "PINNED_ETCD_VERSION",
    "PINNED_KUBE_VERSION",
    "SETUP_SCRIPT",
    "KubeBinaries",
    "KubeBinariesMissingError",
    "KubeTestEnv",
    "KubeTestEnvError",
    "find_kube_binaries",
    "kube_test_env",
]

#: Versions built by scripts/setup-kube-testenv.sh; keep in step with it
#: (tests/integration/test_envtest_smoke.py checks that they agree).
PINNED_KUBE_VERSION = "v1.37.2"
PINNED_ETCD_VERSION = "v3.6.16"
#: Repository-relative path of the script that builds the binaries.
SETUP_SCRIPT = "scripts/setup-kube-testenv.sh"

_LOCALHOST = "127.0.0.1"
# Readiness needs more than envtest's 20 s on a 2-core machine.
_DEFAULT_START_TIMEOUT = 60.0
_STOP_GRACE_SECONDS = 10.0
_PORT_ATTEMPTS = 5
_ADDR_IN_USE = "address already in use"


class KubeTestEnvError(RuntimeError):
    """The test control plane could not be started or used."""


class KubeBinariesMissingError(KubeTestEnvError, FileNotFoundError):
    """kube-apiserver or etcd is not built; the message says how to build them."""


class _PortInUseError(KubeTestEnvError):
    """A probed port was taken before the process bound it; retried internally."""


@dataclass(frozen=True)
class KubeBinaries:
    """Paths of the two binaries the control plane runs."""

    kube_apiserver: Path
    etcd: Path


def _default_bin_dir() -> Path:
    cache = os.environ.get("LIVEPOLICY_CACHE") or str(Path.home() / ".cache" / "livepolicy")
    return Path(cache) / "bin"


def find_kube_binaries(bin_dir: Path | None = None) -> KubeBinaries:
    """Locate kube-apiserver and etcd.

    Order: ``bin_dir``, then ``$LIVEPOLICY_KUBE_BIN``, then
    ``${LIVEPOLICY_CACHE:-~/.cache/livepolicy}/bin`` (where the setup script
    installs them). Raises :class:`KubeBinariesMissingError` naming the setup
    script, because the tests must fail loudly rather than skip.
    """
    if bin_dir is None:
        env_dir = os.environ.get("LIVEPOLICY_KUBE_BIN")
        bin_dir = Path(env_dir) if env_dir else _default_bin_dir()
    found = KubeBinaries(kube_apiserver=bin_dir / "kube-apiserver", etcd=bin_dir / "etcd")
    missing = [p for p in (found.kube_apiserver, found.etcd) if not os.access(p, os.X_OK)]
    if missing:
        names = ", ".join(str(p) for p in missing)
        raise KubeBinariesMissingError(
            f"kube test binaries not found: {names}. Build them with `bash {SETUP_SCRIPT}` "
            f"(kube-apiserver {PINNED_KUBE_VERSION}, etcd {PINNED_ETCD_VERSION}; "
            "about 9 minutes on an idle 2-core machine the first time), "
            "or point LIVEPOLICY_KUBE_BIN at a directory holding both."
        )
    return found


# --------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _KeyPair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _validity() -> tuple[dt.datetime, dt.datetime]:
    # Backdated an hour to tolerate clock skew; a week outlives any test run.
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=7)


def _make_ca(common_name: str) -> _KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, "livepolicy-envtest"))
        .issuer_name(_name(common_name, "livepolicy-envtest"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _KeyPair(cert, key)


def _make_leaf(
    ca: _KeyPair,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName] = (),
) -> _KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return _KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


# --------------------------------------------------------------------------
# Processes and ports
# --------------------------------------------------------------------------


def _free_ports(count: int, address: str = _LOCALHOST) -> list[int]:
    """Bind-probe ``count`` distinct ports of ``address`` (racy; callers retry)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((address, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _pdeathsig_prefix() -> list[str]:
    """Command prefix that makes Linux SIGKILL the child if the test process dies.

    Without it, a crashed or SIGKILLed pytest leaves apiserver and etcd running
    (they sit in their own process group, so terminal signals miss them too).
    util-linux ``setpriv`` sets the parent-death signal and execs the command,
    which keeps that setting; this avoids ``preexec_fn``, unsafe with threads.
    Where setpriv is missing, teardown relies on :meth:`KubeTestEnv.stop`.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class _Proc:
    """A child process in its own process group, logging to a file."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self.popen = subprocess.Popen(
                [*_pdeathsig_prefix(), *args],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        except BaseException:
            self._log.close()
            raise

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise if the process exited; port clashes become ``_PortInUseError``."""
        if self.alive():
            return
        tail = self.log_tail()
        msg = f"{self.name} exited with code {self.popen.returncode}; log {self.log_path}:\n{tail}"
        if _ADDR_IN_USE in tail:
            raise _PortInUseError(msg)
        raise KubeTestEnvError(msg)

    def stop(self, grace: float = _STOP_GRACE_SECONDS) -> None:
        """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
        try:
            if self.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=grace)
            # Kill the whole group even if the leader is gone: helpers may remain.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        finally:
            self._log.close()


# --------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------


class KubeTestEnv:
    """etcd + kube-apiserver on loopback, with an admin kubeconfig.

    Use as a context manager (or call :meth:`start`/:meth:`stop`). Everything
    lives in a private temporary directory removed on :meth:`stop`. The admin
    user is a client certificate ``CN=admin, O=system:masters``; RBAC is the
    only authorizer, so other identities (see :meth:`service_account_token`)
    are denied until a test grants them roles.
    """

    def __init__(
        self,
        *,
        bin_dir: Path | None = None,
        start_timeout: float = _DEFAULT_START_TIMEOUT,
        extra_apiserver_args: Sequence[str] = (),
        keep_work_dir: bool = False,
        address: str = _LOCALHOST,
        pki_hook: Callable[[Path], Sequence[str]] | None = None,
    ) -> None:
        """Prepare (but do not start) an environment.

        ``bin_dir`` overrides where binaries are looked up; ``start_timeout``
        bounds the whole start-up (etcd, apiserver ``/readyz``, namespace
        ``default``); ``extra_apiserver_args`` are appended to the kube-apiserver
        command line (later flags win); ``keep_work_dir`` leaves the temporary
        directory (certs, logs, etcd data) behind for debugging; ``address`` is
        where kube-apiserver binds and what it advertises (a local address other
        than loopback when pods must reach it, as in tests/support/nodeenv.py).
        ``pki_hook`` is called with the pki directory (CA keys included) before
        kube-apiserver starts; the flags it returns are appended too.
        """
        self.address = address
        self._pki_hook = pki_hook
        self._bin_dir = bin_dir
        self._start_timeout = start_timeout
        self._extra_apiserver_args = tuple(extra_apiserver_args)
        self._keep_work_dir = keep_work_dir
        self._work_dir: Path | None = None
        self._etcd: _Proc | None = None
        self._apiserver: _Proc | None = None
        self._server: str | None = None
        self._etcd_url: str | None = None
        self._ssl: ssl.SSLContext | None = None
        self._ready_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Generate certificates, start etcd and kube-apiserver, wait until ready.

        Raises :class:`KubeBinariesMissingError` if the binaries are not built
        and :class:`KubeTestEnvError` if start-up fails (with the log tail).
        """
        if self._work_dir is not None:
            raise KubeTestEnvError("KubeTestEnv already started")
        binaries = find_kube_binaries(self._bin_dir)
        began = time.monotonic()
        deadline = began + self._start_timeout
        self._work_dir = Path(tempfile.mkdtemp(prefix="livepolicy-kube-"))
        atexit.register(self.stop)
        try:
            self._write_pki()
            if self._pki_hook is not None:
                self._extra_apiserver_args += tuple(self._pki_hook(self._pki))
            self._start_etcd(binaries.etcd, deadline)
            self._start_apiserver(binaries.kube_apiserver, deadline)
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise
        self._ready_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd, and remove the work directory.

        Idempotent; also registered with :mod:`atexit` while running.
        """
        atexit.unregister(self.stop)
        try:
            for proc in (self._apiserver, self._etcd):
                if proc is not None:
                    proc.stop()
        finally:
            self._apiserver = None
            self._etcd = None
            work_dir, self._work_dir = self._work_dir, None
            self._server = None
            self._etcd_url = None
            self._ssl = None
            if work_dir is not None and not self._keep_work_dir:
                shutil.rmtree(work_dir, ignore_errors=True)

    # -- public properties -------------------------------------------------

    @property
    def work_dir(self) -> Path:
        """Temporary directory holding ``pki/``, logs and etcd data."""
        if self._work_dir is None:
            raise KubeTestEnvError("KubeTestEnv is not running")
        return self._work_dir

    @property
    def server(self) -> str:
        """API server URL, e.g. ``https://127.0.0.1:40123``."""
        if self._server is None:
            raise KubeTestEnvError("KubeTestEnv is not running")
        return self._server

    @property
    def etcd_url(self) -> str:
        """etcd client URL (plain http on loopback)."""
        if self._etcd_url is None or self._work_dir is None:
            raise KubeTestEnvError("KubeTestEnv is not running")
        return self._etcd_url

    @property
    def kubeconfig_path(self) -> Path:
        """Kubeconfig with the admin client certificate (cluster-admin)."""
        return self.work_dir / "kubeconfig"

    @property
    def ca_path(self) -> Path:
        """PEM CA that signed the apiserver's serving certificate."""
        return self._pki / "serving-ca.crt"

    @property
    def admin_cert_path(self) -> Path:
        """PEM client certificate ``CN=admin, O=system:masters``."""
        return self._pki / "admin.crt"

    @property
    def admin_key_path(self) -> Path:
        """PEM (PKCS#8) private key for :attr:`admin_cert_path`."""
        return self._pki / "admin.key"

    @property
    def apiserver_log_path(self) -> Path:
        """kube-apiserver's combined stdout/stderr."""
        return self.work_dir / "kube-apiserver.log"

    @property
    def ready_seconds(self) -> float:
        """Seconds :meth:`start` took until the API was ready."""
        if self._ready_seconds is None:
            raise KubeTestEnvError("KubeTestEnv is not running")
        return self._ready_seconds

    # -- API helpers -------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """Send one HTTPS request to the apiserver; return ``(status, json-or-text)``.

        Authenticates as the admin client certificate, or with ``token`` as a
        bearer token instead (the admin certificate is then not presented).
        ``body`` is JSON-encoded. Kept dependency-free so fixtures need no
        Kubernetes client.
        """
        ctx = self._ssl_context(with_admin_cert=token is None)
        host = urllib.parse.urlsplit(self.server)
        conn = http.client.HTTPSConnection(
            host.hostname or _LOCALHOST, host.port, context=ctx, timeout=timeout
        )
        headers = {"Accept": "application/json"}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        finally:
            conn.close()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def service_account_token(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600
    ) -> str:
        """Return a bearer token for ServiceAccount ``namespace/name``.

        Creates the namespace and ServiceAccount if missing, then calls the
        TokenRequest API (there is no controller-manager, so no token Secrets).
        The account has no RBAC grants: tests bind roles to
        ``system:serviceaccount:<namespace>:<name>`` as they need.
        ``expiration_seconds`` must be at least 600 (apiserver minimum).
        """
        if namespace != "default":
            self._create_if_absent(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            )
        ns = urllib.parse.quote(namespace, safe="")
        sa = urllib.parse.quote(name, safe="")
        self._create_if_absent(
            f"/api/v1/namespaces/{ns}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )
        status, body = self.request(
            "POST",
            f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        if status != 201 or not isinstance(body, dict):
            raise KubeTestEnvError(f"TokenRequest for {namespace}/{name}: HTTP {status}: {body}")
        token = body.get("status", {}).get("token")
        if not isinstance(token, str) or not token:
            raise KubeTestEnvError(f"TokenRequest for {namespace}/{name} returned no token")
        return token

    def token_kubeconfig(self, token: str, path: Path | None = None) -> Path:
        """Write a kubeconfig that authenticates with bearer ``token``.

        Default path: a new file in :attr:`work_dir`. Pairs with
        :meth:`service_account_token` for RBAC tests through a real client.
        """
        if path is None:
            fd, name = tempfile.mkstemp(prefix="kubeconfig-token-", dir=self.work_dir)
            os.close(fd)
            path = Path(name)
        _write(path, self._kubeconfig_json({"token": token}))
        return path

    # -- internals ---------------------------------------------------------

    @property
    def _pki(self) -> Path:
        return self.work_dir / "pki"

    def _write_pki(self) -> None:
        pki = self._pki
        pki.mkdir(mode=0o700)
        serving_ca = _make_ca("livepolicy-envtest-serving-ca")
        serving = _make_leaf(
            serving_ca,
            _name("localhost"),
            ExtendedKeyUsageOID.SERVER_AUTH,
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(_LOCALHOST)),
             *([x509.IPAddress(ipaddress.ip_address(self.address))]
               if self.address != _LOCALHOST else [])],
        )
        client_ca = _make_ca("livepolicy-envtest-client-ca")
        admin = _make_leaf(
            client_ca, _name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH
        )
        sa_key = ec.generate_private_key(ec.SECP256R1())
        _write(pki / "serving-ca.crt", _cert_pem(serving_ca.cert), 0o644)
        # Kept so that more certificates can be issued (kubelets, nodeenv.py).
        _write(pki / "serving-ca.key", _key_pem(serving_ca.key))
        _write(pki / "client-ca.key", _key_pem(client_ca.key))
        _write(pki / "apiserver.crt", _cert_pem(serving.cert), 0o644)
        _write(pki / "apiserver.key", _key_pem(serving.key))
        _write(pki / "client-ca.crt", _cert_pem(client_ca.cert), 0o644)
        _write(pki / "admin.crt", _cert_pem(admin.cert), 0o644)
        _write(pki / "admin.key", _key_pem(admin.key))
        _write(pki / "sa.key", _key_pem(sa_key))
        _write(
            pki / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            0o644,
        )

    def _start_etcd(self, etcd: Path, deadline: float) -> None:
        data_dir = self.work_dir / "etcd"
        for attempt in range(_PORT_ATTEMPTS):
            client_port, peer_port = _free_ports(2)
            url = f"http://{_LOCALHOST}:{client_port}"
            peer = f"http://{_LOCALHOST}:{peer_port}"
            shutil.rmtree(data_dir, ignore_errors=True)
            proc = _Proc(
                "etcd",
                [
                    str(etcd),
                    "--name=default",
                    f"--data-dir={data_dir}",
                    f"--listen-client-urls={url}",
                    f"--advertise-client-urls={url}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=default={peer}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
                self.work_dir / "etcd.log",
            )
            self._etcd = proc
            try:
                self._wait(proc, deadline, functools.partial(_http_ok, f"{url}/health"))
            except _PortInUseError:
                proc.stop()
                self._etcd = None
                if attempt + 1 == _PORT_ATTEMPTS:
                    raise
                continue
            self._etcd_url = url
            return

    def _start_apiserver(self, apiserver: Path, deadline: float) -> None:
        pki = self._pki
        for attempt in range(_PORT_ATTEMPTS):
            (port,) = _free_ports(1, self.address)
            server = f"https://{self.address}:{port}"
            args = [
                str(apiserver),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.address}",
                f"--secure-port={port}",
                # No default route may exist here; loopback also means the
                # `kubernetes` Endpoints cannot be written, hence reconciler none.
                f"--advertise-address={self.address}",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'client-ca.crt'}",
                f"--service-account-issuer={server}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                # No controller-manager creates `default` ServiceAccounts, so the
                # ServiceAccount admission plugin would reject every Pod.
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
            ]
            # Slice flags (--authorization-mode) append rather than replace: drop the
            # defaults that the extra arguments set again.
            extra = self._extra_apiserver_args
            given = {a.split("=", 1)[0] for a in extra}
            args = [a for a in args if a.split("=", 1)[0] not in given] + list(extra)
            proc = _Proc("kube-apiserver", args, self.work_dir / "kube-apiserver.log")
            self._apiserver = proc
            self._server = server
            self._ssl = None
            try:
                self._wait(proc, deadline, lambda: self._get_ok("/readyz"))
            except _PortInUseError:
                proc.stop()
                self._apiserver = None
                if attempt + 1 == _PORT_ATTEMPTS:
                    raise
                continue
            # /readyz can pass a moment before the system namespaces exist.
            self._wait(proc, deadline, lambda: self._get_ok("/api/v1/namespaces/default"))
            return

    def _wait(self, proc: _Proc, deadline: float, probe: Callable[[], bool]) -> None:
        """Poll ``probe`` every 100 ms until true, the process dies, or time runs out."""
        while True:
            proc.check_alive()
            if probe():
                return
            if time.monotonic() > deadline:
                raise KubeTestEnvError(
                    f"{proc.name} not ready within {self._start_timeout:.0f} s; "
                    f"log {proc.log_path}:\n{proc.log_tail()}"
                )
            time.sleep(0.1)

    def _get_ok(self, path: str) -> bool:
        try:
            status, _ = self.request("GET", path, timeout=5.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def _ssl_context(self, *, with_admin_cert: bool) -> ssl.SSLContext:
        if not with_admin_cert:
            return ssl.create_default_context(cafile=str(self.ca_path))
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=str(self.ca_path))
            ctx.load_cert_chain(str(self.admin_cert_path), str(self.admin_key_path))
            self._ssl = ctx
        return self._ssl

    def _create_if_absent(self, collection: str, obj: dict[str, Any]) -> None:
        status, body = self.request("POST", collection, obj)
        if status not in (201, 409):
            raise KubeTestEnvError(f"POST {collection}: HTTP {status}: {body}")

    def _kubeconfig_json(self, user: dict[str, str]) -> bytes:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "envtest",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca_path.read_bytes()),
                    },
                }
            ],
            "users": [{"name": "envtest-user", "user": user}],
            "contexts": [
                {"name": "envtest", "context": {"cluster": "envtest", "user": "envtest-user"}}
            ],
            "current-context": "envtest",
        }
        # JSON is valid YAML, and every kubeconfig loader accepts it.
        return json.dumps(config, indent=2).encode()

    def _write_kubeconfig(self) -> None:
        user = {
            "client-certificate-data": _b64(self.admin_cert_path.read_bytes()),
            "client-key-data": _b64(self.admin_key_path.read_bytes()),
        }
        _write(self.kubeconfig_path, self._kubeconfig_json(user))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _http_ok(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or _LOCALHOST, parts.port, timeout=2.0)
    try:
        conn.request("GET", parts.path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def kube_test_env(
    *,
    bin_dir: Path | None = None,
    start_timeout: float = _DEFAULT_START_TIMEOUT,
    extra_apiserver_args: Sequence[str] = (),
    keep_work_dir: bool = False,
) -> Iterator[KubeTestEnv]:
    """Generator for a pytest fixture: start a :class:`KubeTestEnv`, yield it, stop it.

    The arguments are those of :class:`KubeTestEnv`. Wrap it with the scope you
    want (one apiserver per module or session keeps suites fast; start-up takes
    several seconds)::

        @pytest.fixture(scope="session")
        def kube_env() -> Iterator[KubeTestEnv]:
            yield from kube_test_env()
    """
    with KubeTestEnv(
        bin_dir=bin_dir,
        start_timeout=start_timeout,
        extra_apiserver_args=extra_apiserver_args,
        keep_work_dir=keep_work_dir,
    ) as env:
        yield env
