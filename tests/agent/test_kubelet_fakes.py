"""A fake kubelet (real HTTPS on loopback, recorded answers) and a fake `ctr` for the
kubelet runtime's tests. No kubelet or containerd runs on this machine."""

from __future__ import annotations

import io
import ipaddress
import json
import os
import secrets
import ssl
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.envtest import _cert_pem, _key_pem, _make_ca, _make_leaf

RESPONSES = Path(__file__).resolve().parent / "kubelet_responses"


@dataclass
class FakeKubelet:
    url: str
    ca_file: Path
    token: str
    token_file: Path
    checkpoints: Path
    calls: list[dict[str, Any]] = field(default_factory=list)
    answer: str = "ok"  # ok | 404_gate_off | 404_pod | 500_unimplemented | 403
    pods: set[tuple[str, str]] = field(default_factory=set)  # known (namespace, pod)


def _archive(pod: str, container: str) -> bytes:
    """A CRI checkpoint archive as containerd writes it (CRIU images + dumps)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        files = {"config.dump": json.dumps({"name": container, "pod": pod}).encode(),
                 "spec.dump": b'{"ociVersion":"1.1.0"}',
                 "checkpoint/inventory.img": os.urandom(64),
                 "checkpoint/pages-1.img": os.urandom(200_000)}
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _handler(fake: FakeKubelet) -> type[BaseHTTPRequestHandler]:
    recorded = json.loads((RESPONSES / "checkpoint_ok.json").read_text())
    node_dir = recorded["items"][0].rsplit("/", 1)[0]
    stamp = recorded["items"][0].rsplit("-", 3)[-3:]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: str, ctype: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            path, _, query = self.path.partition("?")
            auth = self.headers.get("Authorization", "")
            fake.calls.append({"path": path, "query": query, "auth": auth})
            if auth != f"Bearer {fake.token}":
                self._send(401, (RESPONSES / "401.txt").read_text())
                return
            parts = path.split("/")
            if fake.answer == "404_gate_off" or len(parts) != 5 or parts[1] != "checkpoint":
                self._send(404, (RESPONSES / "404_gate_off.txt").read_text())
                return
            _, _, ns, pod, container = parts
            if fake.answer == "404_pod" or (ns, pod) not in fake.pods:
                self._send(404, (RESPONSES / "404_pod.txt").read_text())
                return
            if fake.answer != "ok":
                self._send(int(fake.answer[:3]), (RESPONSES / f"{fake.answer}.txt").read_text())
                return
            base = f"checkpoint-{pod}_{ns}-{container}-{'-'.join(stamp)}"
            (fake.checkpoints / base).write_bytes(_archive(pod, container))
            self._send(200, json.dumps({"items": [f"{node_dir}/{base}"]}), "application/json")

    return Handler


@pytest.fixture
def fake_kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    pki = tmp_path / "kubelet-pki"
    pki.mkdir()
    ca = _make_ca("fake-kubelet-ca")
    leaf = _make_leaf(ca, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-1")]),
                      ExtendedKeyUsageOID.SERVER_AUTH,
                      [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    (pki / "ca.crt").write_bytes(_cert_pem(ca.cert))
    (pki / "tls.crt").write_bytes(_cert_pem(leaf.cert))
    (pki / "tls.key").write_bytes(_key_pem(leaf.key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "tls.crt", pki / "tls.key")
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "sa-token"
    token_file.write_text(token + "\n")
    fake = FakeKubelet("", pki / "ca.crt", token, token_file, checkpoints)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    fake.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(5)


FAKE_CTR = r'''
import hashlib, json, os, sys, tarfile
log = os.environ["FAKE_CTR_LOG"]
args = sys.argv[1:]
i = args.index("-n")
cmd = args[i + 2:]
entry = {"argv": args}
def done(code, **kw):
    entry.update(kw)
    with open(log, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    sys.exit(code)
if cmd == ["version"]:
    sys.stdout.write(open(os.environ["FAKE_CTR_VERSION"]).read())
    done(0)
if cmd[:2] == ["images", "import"]:
    if os.environ.get("FAKE_CTR_FAIL"):
        sys.stdin.buffer.read()
        sys.stderr.write("ctr: failed to import: content digest mismatch\n")
        done(1, error="forced")
    blobs, names = {}, []
    try:
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
            for m in tar:
                names.append(m.name)
                data = tar.extractfile(m).read()
                if m.name.startswith("blobs/sha256/"):
                    digest = m.name.rsplit("/", 1)[1]
                    if hashlib.sha256(data).hexdigest() != digest:
                        raise ValueError(f"blob {digest} does not match its digest")
                    blobs["sha256:" + digest] = data
                elif m.name == "index.json":
                    index = json.loads(data)
                elif m.name == "oci-layout":
                    assert json.loads(data) == {"imageLayoutVersion": "1.0.0"}
        desc = index["manifests"][0]
        manifest = json.loads(blobs[desc["digest"]])
        assert len(blobs[desc["digest"]]) == desc["size"]
        layer = manifest["layers"][0]
        assert len(blobs[layer["digest"]]) == layer["size"]
        config = json.loads(blobs[manifest["config"]["digest"]])
        assert config["rootfs"]["diff_ids"] == [layer["digest"]]
        container = manifest["annotations"]["io.kubernetes.cri-o.annotations.checkpoint.name"]
    except Exception as exc:
        sys.stderr.write(f"ctr: invalid OCI layout: {exc}\n")
        done(1, error=str(exc))
    done(0, image=desc["annotations"]["io.containerd.image.name"], container=container,
         layer_size=layer["size"], layer_digest=layer["digest"], members=names)
done(0)
'''


@dataclass
class FakeCtr:
    path: Path
    log: Path
    config: Path

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def commands(self) -> list[list[str]]:
        out = []
        for c in self.calls():
            argv = c["argv"]
            out.append(argv[argv.index("-n") + 2:])
        return out


@pytest.fixture
def fake_ctr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCtr:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ctr"
    script.write_text(f"#!{sys.executable}\n{FAKE_CTR}")
    script.chmod(0o755)
    log = tmp_path / "ctr.log"
    monkeypatch.setenv("FAKE_CTR_LOG", str(log))
    monkeypatch.setenv("FAKE_CTR_VERSION", str(RESPONSES / "ctr_version.txt"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return FakeCtr(script, log, RESPONSES / "containerd_config.toml")
