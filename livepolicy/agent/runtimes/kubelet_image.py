"""Checkpoint images for containerd, and the narrow `ctr` interface the kubelet runtime uses.

containerd (>= 2.0, containerd PR 10365) restores a container through CRI when the image
of a new container is a *checkpoint image*: an OCI image whose one layer is the archive
the kubelet's checkpoint API wrote, annotated `org.criu.checkpoint.container.name=
<container>` (containerd's key; CRI-O's `io.kubernetes.cri-o.annotations.checkpoint.name`
is set too, so one image serves both).
Since containerd 2.2/2.3 that path is off unless the CRI plugin sets
`enable_experimental_restore_via_create = true` (containerd PRs 13913, 13937).

No buildah here: `write_oci_layout` writes the OCI image layout tarball itself, streaming
the archive straight into `ctr images import -` (stdin), so no plaintext copy of process
memory lands in a temporary file; the layer's size and sha256 come with the archive (the
source computed them) and are checked while the bytes go through, before `index.json`,
the last member, is written: a short or altered layer never becomes an image.

`ContainerdImages` runs `ctr -n k8s.io` (the namespace the CRI plugin uses) for the few
things the runtime needs: version, import, remove, and pause/resume/kill of a task.
Tested with a fake `ctr` (argv and the layout it is fed) and with real containerds in
tests/nodes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from livepolicy.agent.errors import ApiError

#: What containerd reads (checkpointctl's lib.CheckpointAnnotationName, containerd 2.x
#: internal/cri/server/container_checkpoint_linux.go); CRI-O reads its own name.
CHECKPOINT_ANNOTATION = "org.criu.checkpoint.container.name"
CRIO_CHECKPOINT_ANNOTATION = "io.kubernetes.cri-o.annotations.checkpoint.name"
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
RESTORE_OPTION = "enable_experimental_restore_via_create"
#: containerd 2.4.0 removed it; 2.4.2 then fails restores with "no command specified".
NO_RESTORE_SINCE = (2, 4, 0)
CTR_TIMEOUT_S = 900.0
COPY = 1 << 20


class _Verified(io.RawIOBase):
    """Reads exactly `size` bytes from `src`, hashing them; `check()` compares the digest."""

    def __init__(self, src: IO[bytes], size: int) -> None:
        self._src = src
        self._left = size
        self._sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        data = self._src.read(want) if want else b""
        self._left -= len(data)
        self._sha.update(data)
        return data

    def check(self, sha256: str, what: str) -> None:
        if self._left:
            raise ApiError(422, "image_invalid", f"{what}: archive shorter than announced")
        if self._sha.hexdigest() != sha256:
            raise ApiError(422, "image_invalid", f"{what}: archive digest does not match")


def _blob(tar: tarfile.TarFile, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    _member(tar, f"blobs/sha256/{digest}", io.BytesIO(data), len(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _member(tar: tarfile.TarFile, name: str, src: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar.addfile(info, src)


def write_oci_layout(out: IO[bytes], *, container: str, image_ref: str, architecture: str,
                     layer: IO[bytes], layer_size: int, layer_sha256: str) -> str:
    """Write an OCI image layout tarball of one checkpoint image; returns the manifest digest.

    `layer` is read for exactly `layer_size` bytes; a digest mismatch raises before the
    index is written (so `ctr` never sees a complete image)."""
    if not re.fullmatch(r"[0-9a-f]{64}", layer_sha256):
        raise ApiError(422, "image_invalid", f"bad archive digest for container {container}")
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _member(tar, "oci-layout", io.BytesIO(b'{"imageLayoutVersion":"1.0.0"}'), 30)
        checked = _Verified(layer, layer_size)
        try:
            _member(tar, f"blobs/sha256/{layer_sha256}", checked,  # type: ignore[arg-type]
                    layer_size)
        except BrokenPipeError:
            raise
        except OSError:  # tarfile: "unexpected end of data"
            raise ApiError(422, "image_invalid", f"container {container}: archive shorter "
                           "than announced") from None
        checked.check(layer_sha256, f"container {container}")
        layer_desc = {"mediaType": LAYER_TYPE, "digest": f"sha256:{layer_sha256}",
                      "size": layer_size}
        config = {"architecture": architecture, "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_sha256}"]}}
        config_desc = {"mediaType": CONFIG_TYPE,
                       **_blob(tar, json.dumps(config, sort_keys=True).encode())}
        annotations = {CHECKPOINT_ANNOTATION: container, CRIO_CHECKPOINT_ANNOTATION: container}
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config_desc,
                    "layers": [layer_desc], "annotations": annotations}
        manifest_desc = _blob(tar, json.dumps(manifest, sort_keys=True).encode())
        index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [{
            "mediaType": MANIFEST_TYPE, **manifest_desc,
            "annotations": {IMAGE_NAME_ANNOTATION: image_ref,
                            REF_NAME_ANNOTATION: image_ref.rpartition(":")[2],
                            **annotations}}]}
        data = json.dumps(index, sort_keys=True).encode()
        _member(tar, "index.json", io.BytesIO(data), len(data))
    return str(manifest_desc["digest"])


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The server version `ctr version` prints (`Server: ... Version: v2.1.4`)."""
    server = text.split("Server:", 1)[1] if "Server:" in text else text
    m = re.search(r"Version:\s*v?(\d+)\.(\d+)\.(\d+)", server)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def restore_option(config_text: str) -> bool:
    """Whether a containerd config enables CRI restore (`enable_experimental_restore_via_
    create = true` in any table: its place differs between config versions 2 and 3)."""
    try:
        doc = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError:
        return False

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            return node.get(RESTORE_OPTION) is True or any(walk(v) for v in node.values())
        return False

    return walk(doc)


@dataclass(frozen=True)
class ContainerdInfo:
    version: str
    restore: bool  # CRI CreateContainer restores checkpoint images here
    reason: str  # why not, when restore is False

    def to_json(self) -> dict[str, object]:
        return {"containerd_version": self.version, "restore": self.restore,
                "restore_reason": self.reason}


class ContainerdImages:
    """`ctr -n k8s.io ...`: the only way the kubelet runtime touches containerd."""

    def __init__(self, ctr: str, *, address: str = "/run/containerd/containerd.sock",
                 namespace: str = "k8s.io",
                 config_file: Path = Path("/etc/containerd/config.toml")) -> None:
        self.ctr = ctr
        self.address = address
        self.namespace = namespace
        self.config_file = config_file

    def _cmd(self, *args: str) -> list[str]:
        return [self.ctr, "--address", self.address, "-n", self.namespace, *args]

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(self._cmd(*args), capture_output=True, text=True,
                                  timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ApiError(500, "containerd_failed",
                           f"ctr {args[0]} timed out after {timeout:.0f}s") from None
        except OSError as exc:
            raise ApiError(500, "containerd_failed", f"cannot run {self.ctr}: {exc}") from None

    def _must(self, *args: str) -> str:
        res = self._run(*args)
        if res.returncode != 0:
            raise ApiError(500, "containerd_failed", f"ctr {' '.join(args)} failed: "
                           f"{(res.stderr or res.stdout).strip()[-400:]}")
        return res.stdout

    def detect(self) -> ContainerdInfo:
        try:
            res = self._run("version", timeout=30)
        except ApiError as exc:
            return ContainerdInfo("", False, exc.message)
        version = parse_version(res.stdout) if res.returncode == 0 else None
        text = ".".join(map(str, version)) if version else ""
        if version is None:
            why = (res.stderr or res.stdout).strip()[-200:]
            return ContainerdInfo("", False, f"cannot read the containerd version: {why}")
        if version < (2, 0, 0):
            return ContainerdInfo(text, False, f"containerd {text} cannot restore checkpoint "
                                  "images through CRI (needs >= 2.0)")
        if version >= NO_RESTORE_SINCE:
            return ContainerdInfo(text, False, f"containerd {text} has no CRI restore: 2.4 "
                                  "removed restore through CreateContainer (containerd PR "
                                  "13871) and its replacement has not shipped; nodes that "
                                  "receive pods need containerd 2.3.x")
        try:
            enabled = restore_option(self.config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            return ContainerdInfo(text, False, f"cannot read {self.config_file}: {exc}")
        if not enabled:
            return ContainerdInfo(text, False, f"{self.config_file} does not set "
                                  f"{RESTORE_OPTION} = true in the CRI plugin")
        return ContainerdInfo(text, True, "")

    def import_image(self, write: Callable[[IO[bytes]], object]) -> None:
        """`ctr images import -` fed by `write(stdin)`; raises if either side fails.
        (stdout is discarded and stderr goes to a file: a full pipe cannot stall us.)"""
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(self._cmd("images", "import", "-"),
                                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=err)
            except OSError as exc:
                raise ApiError(500, "containerd_failed",
                               f"cannot run {self.ctr}: {exc}") from None
            assert proc.stdin is not None
            broke = False
            try:
                try:
                    write(proc.stdin)
                    proc.stdin.close()
                except BrokenPipeError:
                    broke = True  # ctr stopped reading: its status and stderr say why
                proc.wait(timeout=CTR_TIMEOUT_S)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if proc.returncode != 0 or broke:
                err.seek(0)
                why = err.read()[-400:].decode("utf-8", "replace").strip()
                raise ApiError(500, "containerd_failed", f"ctr images import failed: {why}")

    def remove_image(self, ref: str) -> None:
        self._run("images", "rm", ref)  # absent already: fine

    def pause(self, container_id: str) -> None:
        self._must("tasks", "pause", container_id)

    def resume(self, container_id: str) -> None:
        res = self._run("tasks", "resume", container_id)
        if res.returncode != 0 and "not paused" not in (res.stderr + res.stdout):
            raise ApiError(500, "containerd_failed", f"ctr tasks resume {container_id} "
                           f"failed: {(res.stderr or res.stdout).strip()[-400:]}")

    def task_pid(self, container_id: str) -> int:
        """The PID (host namespace) of the container's init process: its pod's netns."""
        for line in self._must("tasks", "ls").splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == container_id and fields[1].isdigit():
                return int(fields[1])
        raise ApiError(409, "pod_not_running", f"container {container_id} has no task")

    def kill(self, container_id: str) -> None:
        self._run("tasks", "kill", "--signal", "SIGKILL", container_id)
