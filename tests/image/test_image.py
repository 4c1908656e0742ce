"""The livepolicy container image (scripts/build-image.sh): a real build, cached.

The OCI layout must parse and verify blob by blob, carry the reference that kubelet
resolves from the chart's defaults, rebuild to the same manifest digest, and run: its
layers are extracted and the CLI, CRIU, the agent and ctr are started chrooted into it
(as root, and as the controller's uid 65532 on a read-only root).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "build-image.sh"
CACHE = Path(os.environ.get("LIVEPOLICY_CACHE", Path.home() / ".cache" / "livepolicy"))

pytestmark = pytest.mark.slow


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the image tests need root (debootstrap, chroot); running as uid "
                    f"{os.geteuid()}. Run them as root or deselect tests/image.", pytrace=False)


def build(*args: str) -> tuple[Path, str, str]:
    """Run the build script; return (OCI tar, reference, manifest digest)."""
    require_root()
    proc = subprocess.run([str(BUILD), *args], capture_output=True, text=True, timeout=1800,
                          check=False)
    assert proc.returncode == 0, f"build-image.sh failed:\n{proc.stderr[-4000:]}"
    path, ref, digest = proc.stdout.split()
    return Path(path), ref, digest


def version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


@pytest.fixture(scope="module")
def image() -> tuple[Path, str, str]:
    return build()


def blob(tar: tarfile.TarFile, desc: dict[str, Any]) -> bytes:
    algo, _, hexdigest = desc["digest"].partition(":")
    assert algo == "sha256"
    f = tar.extractfile(f"blobs/sha256/{hexdigest}")
    assert f is not None, f"missing blob {desc['digest']}"
    data = f.read()
    assert len(data) == desc["size"], desc
    assert hashlib.sha256(data).hexdigest() == hexdigest, desc
    return data


@pytest.fixture(scope="module")
def layout(image: tuple[Path, str, str]) -> dict[str, Any]:
    """index.json, manifest, config and the decompressed layers, every blob checked."""
    path, _, _ = image
    with tarfile.open(path) as tar:
        names = tar.getnames()
        f = tar.extractfile("oci-layout")
        assert f is not None
        assert json.load(f) == {"imageLayoutVersion": "1.0.0"}
        f = tar.extractfile("index.json")
        assert f is not None
        index = json.load(f)
        (desc,) = index["manifests"]
        manifest = json.loads(blob(tar, desc))
        config = json.loads(blob(tar, manifest["config"]))
        layers = [gzip.decompress(blob(tar, layer)) for layer in manifest["layers"]]
    return {"names": names, "index": index, "manifest": manifest, "config": config,
            "layers": layers}


def test_layout_parses_and_every_blob_matches(layout: dict[str, Any]) -> None:
    manifest, config = layout["manifest"], layout["config"]
    assert layout["index"]["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert len(manifest["layers"]) == 2
    assert {la["mediaType"] for la in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"}
    # No blob in the tar that nothing refers to.
    referenced = {d["digest"].removeprefix("sha256:") for d in
                  [layout["index"]["manifests"][0], manifest["config"], *manifest["layers"]]}
    assert {n.removeprefix("blobs/sha256/") for n in layout["names"]
            if n.startswith("blobs/sha256/")} == referenced
    assert config["rootfs"]["diff_ids"] == [
        f"sha256:{hashlib.sha256(la).hexdigest()}" for la in layout["layers"]]
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    rc = config["config"]
    assert rc["Entrypoint"] == ["/usr/bin/tini", "--", "livepolicy"]
    assert "User" not in rc  # the chart sets the uid: 65532 for the controller, 0 for agents
    assert any(e.startswith("PATH=") and "/usr/local/bin" in e for e in rc["Env"])


def test_layers_are_normalized(layout: dict[str, Any]) -> None:
    """Sorted entries, mtimes clamped to the image's `created`, no owner names."""
    created = dt.datetime.strptime(layout["config"]["created"], "%Y-%m-%dT%H:%M:%S%z")
    epoch = int(created.timestamp())
    for raw in layout["layers"]:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names, key=lambda n: [os.fsencode(p) for p in n.split("/")])
        assert all(m.mtime <= epoch for m in members)
        assert all(m.uname == "" and m.gname == "" for m in members)
        assert not [n for n in names if n.startswith(
            ("dev/", "proc/", "sys/", "var/log/", "var/lib/apt/lists/", "var/cache/apt/"))]


def test_reference_is_what_kubelet_resolves_from_the_chart(
        image: tuple[Path, str, str], layout: dict[str, Any]) -> None:
    _, ref, _ = image
    chart = (REPO / "deploy/helm/livepolicy/Chart.yaml").read_text()
    app_version = next(line.split(":", 1)[1].strip().strip('"') for line in chart.splitlines()
                       if line.startswith("appVersion:"))
    values = (REPO / "deploy/helm/livepolicy/values.yaml").read_text()
    assert "  repository: livepolicy\n" in values
    assert app_version == version()
    # `livepolicy:<appVersion>` normalizes to docker.io/library/livepolicy:<appVersion>.
    assert ref == f"docker.io/library/livepolicy:{app_version}"
    annotations = layout["index"]["manifests"][0]["annotations"]
    assert annotations["org.opencontainers.image.ref.name"] == ref
    assert annotations["io.containerd.image.name"] == ref


def test_rebuild_gives_the_same_manifest_digest(image: tuple[Path, str, str]) -> None:
    """--force ignores the stamp: the base layer is tarred again from the cached debootstrap
    rootfs, and the app layer rebuilt from scratch (fresh venv from the same wheel and lock,
    bytecode compiled again, CRIU and ctr copied again). Not compared: a fresh debootstrap,
    whose package versions follow the mirror (the base rootfs's packages.lock lists them)."""
    path, ref, digest = image
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    path2, ref2, digest2 = build("--force")
    assert (path2, ref2) == (path, ref)
    assert digest2 == digest
    assert hashlib.sha256(path2.read_bytes()).hexdigest() == before


@pytest.fixture(scope="module")
def rootfs(layout: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("image-rootfs")
    root.chmod(0o755)  # "/" of a container, as runtimes make it (mktemp gives 0700)
    for raw in layout["layers"]:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            tar.extractall(root, filter="fully_trusted")  # our own image: absolute symlinks
    yield root


def run_in(root: Path, *argv: str, user: str | None = None,
           read_only: bool = False) -> subprocess.CompletedProcess[str]:
    """argv chrooted into root with the image's environment; read_only: root bind-mounted
    read-only (the chart's readOnlyRootFilesystem) in a private mount namespace."""
    env = ["/usr/bin/env", "-i", "PATH=/opt/livepolicy/bin:/usr/local/sbin:/usr/local/bin:"
           "/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/tmp"]
    chroot = ["chroot", *([f"--userspec={user}"] if user else []), str(root), *env, *argv]
    if read_only:
        script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && '
                  'exec "$@"')
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
               str(root), *chroot]
    else:
        cmd = chroot
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_cli_runs(rootfs: Path) -> None:
    proc = run_in(rootfs, "/usr/local/bin/livepolicy", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: livepolicy" in proc.stdout


def test_entrypoint_runs(rootfs: Path, layout: dict[str, Any]) -> None:
    proc = run_in(rootfs, *layout["config"]["config"]["Entrypoint"], "--version")
    assert proc.returncode == 0, proc.stderr


def test_controller_runs_as_65532_on_a_read_only_root(rootfs: Path) -> None:
    proc = run_in(rootfs, "livepolicy", "controller", "--help", user="65532:65532",
                  read_only=True)
    assert proc.returncode == 0, proc.stderr
    proc = run_in(rootfs, "python", "-c", "import livepolicy.controller", user="65532:65532",
                  read_only=True)
    assert proc.returncode == 0, proc.stderr


def test_agent_imports(rootfs: Path) -> None:
    proc = run_in(rootfs, "python", "-c", "import livepolicy.agent.main, sys; "
                  "print(sys.prefix, sys.version_info[:2])")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "/opt/livepolicy" and "(3, 11)" in proc.stdout


def test_criu_runs(rootfs: Path) -> None:
    proc = run_in(rootfs, "criu", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Version: 4.")


def test_ctr_runs(rootfs: Path) -> None:
    """The build takes the ctr of scripts/setup-node-testenv.sh, or fails without it
    unless --no-ctr: the default build (the fixture's) therefore has it."""
    assert (rootfs / "usr/local/bin/ctr").is_file()
    proc = run_in(rootfs, "ctr", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ctr ")
    host = CACHE / "node" / "bin" / "ctr"
    if host.is_file():
        assert (rootfs / "usr/local/bin/ctr").read_bytes() == host.read_bytes()


def test_dev_extras_are_not_installed(rootfs: Path) -> None:
    site = rootfs / "opt/livepolicy/lib/python3.11/site-packages"
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert "livepolicy" in installed and "pydantic" in installed
    assert not installed & {"pytest", "mypy", "ruff", "hypothesis", "moto", "pip"}
