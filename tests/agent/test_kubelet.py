"""The kubelet runtime's edges: the kubelet checkpoint API client against a fake kubelet
(real HTTPS, bearer token checked, recorded answers), the OCI checkpoint image it builds
(parsed back with tarfile + json) and `ctr` through a fake executable. No kubelet or
containerd runs on this machine."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import IO, Any

import pytest

from livepolicy.agent.errors import ApiError
from livepolicy.agent.runtimes.base import PodRef
from livepolicy.agent.runtimes.kubelet_api import KubeletAuth, KubeletClient
from livepolicy.agent.runtimes.kubelet_image import (
    CHECKPOINT_ANNOTATION,
    CRIO_CHECKPOINT_ANNOTATION,
    ContainerdImages,
    parse_version,
    restore_option,
    write_oci_layout,
)
from livepolicy.agent.runtimes.kubelet_stream import StreamFile, read_pod_stream, write_pod_stream
from tests.agent.test_kubelet_fakes import RESPONSES, FakeCtr, FakeKubelet, fake_ctr, fake_kubelet

__all__ = ["fake_ctr", "fake_kubelet"]


def _client(fake: FakeKubelet, token_file: Path | None = None) -> KubeletClient:
    return KubeletClient(fake.url, KubeletAuth(ca_file=fake.ca_file,
                                               token_file=token_file or fake.token_file))


def test_checkpoint_returns_the_archive_and_sends_token_and_timeout(
        fake_kubelet: FakeKubelet) -> None:
    fake_kubelet.pods.add(("default", "web"))
    path = _client(fake_kubelet).checkpoint("default", "web", "app", 30)
    assert path.startswith("/var/lib/kubelet/checkpoints/checkpoint-web_default-app-")
    assert path.endswith(".tar")
    base = path.rsplit("/", 1)[1]
    with tarfile.open(fake_kubelet.checkpoints / base) as tar:
        assert "checkpoint/inventory.img" in tar.getnames()
    (call,) = fake_kubelet.calls
    assert call == {"path": "/checkpoint/default/web/app", "query": "timeout=30",
                    "auth": f"Bearer {fake_kubelet.token}"}


@pytest.mark.parametrize(("answer", "status", "code", "words"), [
    ("404_gate_off", 404, "checkpoint_unavailable", "ContainerCheckpoint feature gate"),
    ("404_pod", 404, "pod_not_found", "does not know default/web/app"),
    ("500_unimplemented", 500, "checkpoint_failed", "CheckpointContainer not implemented"),
    ("403", 502, "kubelet_forbidden", "nodes/checkpoint"),
])
def test_kubelet_refusals_map_to_stable_codes(fake_kubelet: FakeKubelet, answer: str,
                                              status: int, code: str, words: str) -> None:
    fake_kubelet.pods.add(("default", "web"))
    fake_kubelet.answer = answer
    with pytest.raises(ApiError) as err:
        _client(fake_kubelet).checkpoint("default", "web", "app", 0)
    assert (err.value.status, err.value.code) == (status, code)
    assert words in err.value.message
    assert "Traceback" not in err.value.message


def test_wrong_token_is_401_unauthorized(fake_kubelet: FakeKubelet, tmp_path: Path) -> None:
    bad = tmp_path / "bad-token"
    bad.write_text("not-the-token")
    with pytest.raises(ApiError) as err:
        _client(fake_kubelet, bad).checkpoint("default", "web", "app", 0)
    assert err.value.code == "kubelet_unauthorized"
    assert "401" in err.value.message and "Unauthorized" in err.value.message
    assert fake_kubelet.calls[0]["auth"] == "Bearer not-the-token"


def test_untrusted_kubelet_certificate_is_refused(fake_kubelet: FakeKubelet) -> None:
    client = KubeletClient(fake_kubelet.url, KubeletAuth(ca_file=None,
                                                         token_file=fake_kubelet.token_file))
    with pytest.raises(ApiError) as err:
        client.checkpoint("default", "web", "app", 0)
    assert err.value.code == "kubelet_unreachable" and "--kubelet-ca" in err.value.message
    assert fake_kubelet.calls == []  # the token never left


def test_kubelet_url_must_be_https() -> None:
    with pytest.raises(ValueError, match="https"):
        KubeletClient("http://127.0.0.1:10250", KubeletAuth())


def _layout(layer: bytes, sha: str | None = None) -> bytes:
    out = io.BytesIO()
    write_oci_layout(out, container="app", image_ref="localhost/livepolicy/cp-app:abc",
                     architecture="amd64", layer=io.BytesIO(layer), layer_size=len(layer),
                     layer_sha256=sha or hashlib.sha256(layer).hexdigest())
    return out.getvalue()


def test_oci_layout_is_a_valid_checkpoint_image() -> None:
    layer = os.urandom(300_000)
    with tarfile.open(fileobj=io.BytesIO(_layout(layer))) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar  # type: ignore[union-attr]
                 if m.isfile()}
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    (desc,) = index["manifests"]
    assert desc["annotations"]["io.containerd.image.name"] == "localhost/livepolicy/cp-app:abc"
    manifest_blob = files[f"blobs/sha256/{desc['digest'].split(':')[1]}"]
    assert len(manifest_blob) == desc["size"]
    manifest = json.loads(manifest_blob)
    assert manifest["annotations"] == {CHECKPOINT_ANNOTATION: "app",
                                       CRIO_CHECKPOINT_ANNOTATION: "app"}
    (lay,) = manifest["layers"]
    assert lay == {"mediaType": "application/vnd.oci.image.layer.v1.tar",
                   "digest": f"sha256:{hashlib.sha256(layer).hexdigest()}", "size": len(layer)}
    assert files[f"blobs/sha256/{lay['digest'].split(':')[1]}"] == layer
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["rootfs"]["diff_ids"] == [lay["digest"]]
    assert (config["architecture"], config["os"]) == ("amd64", "linux")


def test_oci_layout_refuses_an_altered_or_short_layer_before_the_index() -> None:
    layer = os.urandom(10_000)
    out = io.BytesIO()
    with pytest.raises(ApiError, match="digest does not match"):
        write_oci_layout(out, container="app", image_ref="x:y", architecture="amd64",
                         layer=io.BytesIO(layer), layer_size=len(layer),
                         layer_sha256=hashlib.sha256(b"other").hexdigest())
    assert b"index.json" not in out.getvalue()
    with pytest.raises(ApiError, match="shorter"):
        write_oci_layout(io.BytesIO(), container="app", image_ref="x:y", architecture="amd64",
                         layer=io.BytesIO(layer[:5000]), layer_size=len(layer),
                         layer_sha256=hashlib.sha256(layer).hexdigest())


def test_containerd_detection_from_version_and_config(
        fake_ctr: FakeCtr, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    info = ContainerdImages("ctr", config_file=fake_ctr.config).detect()
    assert (info.version, info.restore, info.reason) == ("2.1.4", True, "")
    off = tmp_path / "config.toml"
    off.write_text("version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n")
    info = ContainerdImages("ctr", config_file=off).detect()
    assert not info.restore and "enable_experimental_restore_via_create" in info.reason
    assert parse_version("Server:\n  Version:  v1.7.24\n") == (1, 7, 24)
    assert not restore_option("not [toml")
    old = tmp_path / "v1.txt"
    old.write_text("Client:\n  Version: v1.7.24\nServer:\n  Version: v1.7.24\n")
    monkeypatch.setenv("FAKE_CTR_VERSION", str(old))
    info = ContainerdImages("ctr", config_file=fake_ctr.config).detect()
    assert not info.restore and "needs >= 2.0" in info.reason
    for new in ("v2.4.0", "v2.4.2", "v3.0.1"):  # restore via CreateContainer is gone
        (tmp_path / "new.txt").write_text(f"Server:\n  Version: {new}\n")
        monkeypatch.setenv("FAKE_CTR_VERSION", str(tmp_path / "new.txt"))
        info = ContainerdImages("ctr", config_file=fake_ctr.config).detect()
        assert not info.restore and "has no CRI restore" in info.reason
        assert "2.3.x" in info.reason
    (tmp_path / "last.txt").write_text("Server:\n  Version: v2.3.7\n")
    monkeypatch.setenv("FAKE_CTR_VERSION", str(tmp_path / "last.txt"))
    assert ContainerdImages("ctr", config_file=fake_ctr.config).detect().restore
    missing = ContainerdImages(str(tmp_path / "no-ctr"), config_file=fake_ctr.config)
    assert not missing.detect().restore


def test_import_streams_a_layout_that_ctr_validates(fake_ctr: FakeCtr) -> None:
    layer = os.urandom(2 << 20)
    images = ContainerdImages("ctr", address="/run/test.sock", config_file=fake_ctr.config)
    images.import_image(lambda out: write_oci_layout(
        out, container="app", image_ref="localhost/livepolicy/cp:1", architecture="amd64",
        layer=io.BytesIO(layer), layer_size=len(layer),
        layer_sha256=hashlib.sha256(layer).hexdigest()))
    (call,) = fake_ctr.calls()
    assert call["argv"] == ["--address", "/run/test.sock", "-n", "k8s.io", "images",
                            "import", "-"]
    assert call["image"] == "localhost/livepolicy/cp:1" and call["container"] == "app"
    assert call["layer_size"] == len(layer)
    assert call["members"][-1] == "index.json"


def test_import_failure_is_a_clear_error(fake_ctr: FakeCtr,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CTR_FAIL", "1")
    with pytest.raises(ApiError) as err:
        ContainerdImages("ctr", config_file=fake_ctr.config).import_image(
            lambda out: out.write(b"x" * 100))
    assert err.value.code == "containerd_failed"
    assert "content digest mismatch" in err.value.message


def test_recorded_responses_are_present() -> None:
    names = {p.name for p in RESPONSES.iterdir()}
    assert {"checkpoint_ok.json", "404_gate_off.txt", "404_pod.txt", "500_unimplemented.txt",
            "401.txt", "403.txt"} <= names


def _pod_stream(tmp_path: Path, uid: str = "uid-1") -> bytes:
    archive = tmp_path / "checkpoint-web_default-app-2026-12-01T21:30:05Z.tar"
    archive.write_bytes(os.urandom(50_000))
    out = io.BytesIO()
    pod = {"metadata": {"name": "web", "namespace": "default", "uid": uid},
           "spec": {"containers": [{"name": "app", "image": "x"}]}}
    write_pod_stream(out, pod, ["app"], {"app": archive}, node="n1", architecture="amd64")
    return out.getvalue()


def test_pod_stream_round_trip_and_refusals(tmp_path: Path) -> None:
    data = _pod_stream(tmp_path)
    seen: list[tuple[str, int]] = []

    def take(name: str, src: IO[bytes], entry: dict[str, Any]) -> None:
        body = src.read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]
        seen.append((name, len(body)))

    chunks = [data[i:i + 7000] for i in range(0, len(data), 7000)]
    stream = StreamFile(chunks)
    manifest = read_pod_stream(stream, PodRef("default", "web"), "uid-1", "amd64", take)
    stream.drain()
    assert seen == [("app", 50_000)] and manifest["source_node"] == "n1"
    assert stream.sha.hexdigest() == hashlib.sha256(data).hexdigest()
    for ref, uid, arch, code in [(PodRef("default", "other"), "uid-1", "amd64", "image_invalid"),
                                 (PodRef("default", "web"), "uid-2", "amd64", "image_invalid"),
                                 (PodRef("default", "web"), "uid-1", "arm64",
                                  "architecture_mismatch")]:
        with pytest.raises(ApiError) as err:
            read_pod_stream(StreamFile([data]), ref, uid, arch, take)
        assert err.value.code == code
    with pytest.raises(ApiError) as err:
        read_pod_stream(StreamFile([b"not a tar at all" * 100]), PodRef("default", "web"),
                        "uid-1", "amd64", take)
    assert err.value.code == "image_invalid"
