#!/usr/bin/env python3
"""Deterministic OCI image writer for scripts/build-image.sh (standard library only).

No container engine runs where livepolicy's image is built, so the image is assembled
here: each layer is a sorted tar of a directory tree, written by `tarfile` with every mtime
clamped to SOURCE_DATE_EPOCH, owner names dropped (numeric uid/gid kept, as in the
rootfs) and gzip'd with mtime 0; the image is an OCI image layout (oci-layout, index.json,
blobs/sha256/...) packed into one tar the same way. The same trees and arguments give the
same bytes, hence the same manifest digest.

    oci_image.py layer --root DIR [--path REL ...] --epoch N --out LAYER.tar.gz
        writes and prints the layer's descriptor (digest, size, diff_id, file) as
        LAYER.tar.gz.json
    oci_image.py image --layer DESC.json ... --ref REF --epoch N --entrypoint JSON
                       [--cmd JSON] [--env K=V ...] [--label K=V ...] [--history TEXT ...]
                       --out IMAGE.oci.tar
        prints the manifest digest
    oci_image.py verify IMAGE.oci.tar
        checks every blob's digest and size; prints the reference and manifest digest

The tag goes into index.json twice: `org.opencontainers.image.ref.name` and containerd's
`io.containerd.image.name`, both as the full reference (docker.io/library/livepolicy:TAG).
`ctr images import` without `--base-name` names an image after a full reference in these
annotations (containerd core/transfer/image/imagestore.go, imageName with AddRefPrefix); a
bare tag would become `import-<date>:TAG`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
GZIP_LEVEL = 6


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `out`."""

    def __init__(self, out: IO[bytes]) -> None:
        super().__init__()
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.sha.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


def _walk(root: Path, rel: str) -> Iterator[str]:
    """`rel` and everything below it, depth first, names sorted bytewise."""
    yield rel
    path = root / rel
    if path.is_dir() and not path.is_symlink():
        for name in sorted(os.listdir(path), key=os.fsencode):
            yield from _walk(root, f"{rel}/{name}" if rel else name)


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _member_names(root: Path, paths: list[str]) -> list[str]:
    """Every entry of the layer in order: parent directories of each path once, then the
    path's tree; all of the root when no path is given."""
    if not paths:
        return [n for n in _walk(root, "") if n]
    names: list[str] = []
    seen: set[str] = set()
    for rel in sorted({p.strip("/") for p in paths}, key=os.fsencode):
        if not (root / rel).exists() and not (root / rel).is_symlink():
            raise SystemExit(f"oci_image: {root / rel} does not exist")
        for name in [*_parents(rel), *_walk(root, rel)]:
            if name not in seen:
                seen.add(name)
                names.append(name)
    return names


def _tarinfo(tar: tarfile.TarFile, root: Path, rel: str, epoch: int) -> tarfile.TarInfo:
    info = tar.gettarinfo(str(root / rel), arcname=rel)
    st = os.lstat(root / rel)
    if stat.S_ISSOCK(st.st_mode):
        raise SystemExit(f"oci_image: {root / rel} is a socket")
    info.mtime = min(int(st.st_mtime), epoch)
    info.uname = ""
    info.gname = ""
    info.mode = stat.S_IMODE(st.st_mode)
    if info.isdev():
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return info


def write_layer(root: Path, paths: list[str], epoch: int, out: Path) -> dict[str, Any]:
    """Tar `paths` of `root` (all of it if empty) into a gzip'd layer at `out`."""
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        compressed = _HashingWriter(f)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0,
                           compresslevel=GZIP_LEVEL) as gz:
            plain = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel in _member_names(root, paths):
                    info = _tarinfo(tar, root, rel, epoch)
                    if info.isreg():
                        with (root / rel).open("rb") as src:
                            tar.addfile(info, src)
                    else:
                        tar.addfile(info)
    tmp.replace(out)
    return {"mediaType": MEDIA_LAYER, "digest": f"sha256:{compressed.sha.hexdigest()}",
            "size": compressed.size, "diff_id": f"sha256:{plain.sha.hexdigest()}"}


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
            "size": len(data)}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, epoch: int, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = epoch
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, epoch: int) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mtime = epoch
    info.mode = 0o755
    tar.addfile(info)


def write_image(layers: list[tuple[dict[str, Any], Path]], ref: str, epoch: int,
                entrypoint: list[str], cmd: list[str] | None, env: list[str],
                labels: dict[str, str], history: list[str], out: Path) -> str:
    """Write the OCI layout tar; return the manifest digest."""
    created = dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    runtime: dict[str, Any] = {"Entrypoint": entrypoint, "Env": env, "WorkingDir": "/"}
    if cmd is not None:
        runtime["Cmd"] = cmd
    if labels:
        runtime["Labels"] = labels
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [d["diff_id"] for d, _ in layers]},
        "history": [{"created": created, "created_by": h} for h in history],
    }
    config_bytes = _canonical(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": _descriptor(MEDIA_CONFIG, config_bytes),
        "layers": [{"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"]}
                   for d, _ in layers],
        "annotations": {"org.opencontainers.image.created": created},
    }
    manifest_bytes = _canonical(manifest)
    manifest_desc = _descriptor(MEDIA_MANIFEST, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{**manifest_desc,
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {REF_NAME: ref, CONTAINERD_NAME: ref}}],
    }
    blobs: dict[str, bytes] = {}
    for data in (config_bytes, manifest_bytes):
        blobs[hashlib.sha256(data).hexdigest()] = data
    files: dict[str, Path] = {d["digest"].removeprefix("sha256:"): p for d, p in layers}
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}), epoch, 0o644)
        _add_bytes(tar, "index.json", _canonical(index), epoch, 0o644)
        _add_dir(tar, "blobs", epoch)
        _add_dir(tar, "blobs/sha256", epoch)
        for hexdigest in sorted({*blobs, *files}):
            name = f"blobs/sha256/{hexdigest}"
            if hexdigest in blobs:
                _add_bytes(tar, name, blobs[hexdigest], epoch, 0o644)
            else:
                info = tarfile.TarInfo(name)
                info.size = files[hexdigest].stat().st_size
                info.mtime = epoch
                info.mode = 0o644
                with files[hexdigest].open("rb") as src:
                    tar.addfile(info, src)
    tmp.replace(out)
    return str(manifest_desc["digest"])


def _blob(tar: tarfile.TarFile, digest: str, size: int) -> bytes:
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256":
        raise ValueError(f"unsupported digest {digest}")
    member = tar.extractfile(f"blobs/sha256/{hexdigest}")
    if member is None:
        raise ValueError(f"blob {digest} is missing")
    sha = hashlib.sha256()
    got = 0
    head = b""
    while chunk := member.read(1 << 20):
        sha.update(chunk)
        got += len(chunk)
        if len(head) < (1 << 20):
            head += chunk
    if got != size or sha.hexdigest() != hexdigest:
        raise ValueError(f"blob {digest}: size {got} (want {size}), sha256 {sha.hexdigest()}")
    return head


def verify(path: Path) -> tuple[str, str]:
    """Check every blob of an OCI layout tar; return (reference, manifest digest)."""
    with tarfile.open(path) as tar:
        layout = tar.extractfile("oci-layout")
        if layout is None or json.load(layout) != {"imageLayoutVersion": "1.0.0"}:
            raise ValueError("bad oci-layout")
        index_file = tar.extractfile("index.json")
        if index_file is None:
            raise ValueError("no index.json")
        index = json.load(index_file)
        (desc,) = index["manifests"]
        manifest = json.loads(_blob(tar, desc["digest"], desc["size"]))
        config_desc = manifest["config"]
        config = json.loads(_blob(tar, config_desc["digest"], config_desc["size"]))
        for layer in manifest["layers"]:
            _blob(tar, layer["digest"], layer["size"])
        if len(config["rootfs"]["diff_ids"]) != len(manifest["layers"]):
            raise ValueError("diff_ids and layers differ in number")
        return str(desc["annotations"][REF_NAME]), str(desc["digest"])


def _pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    lp = sub.add_parser("layer")
    lp.add_argument("--root", type=Path, required=True)
    lp.add_argument("--path", action="append", default=[])
    lp.add_argument("--epoch", type=int, required=True)
    lp.add_argument("--out", type=Path, required=True)
    ip = sub.add_parser("image")
    ip.add_argument("--layer", type=Path, action="append", required=True,
                    help="a descriptor JSON written by `layer` (its blob sits next to it)")
    ip.add_argument("--ref", required=True)
    ip.add_argument("--epoch", type=int, required=True)
    ip.add_argument("--entrypoint", required=True, help="JSON list")
    ip.add_argument("--cmd", help="JSON list")
    ip.add_argument("--env", action="append", default=[])
    ip.add_argument("--label", action="append", default=[])
    ip.add_argument("--history", action="append", default=[])
    ip.add_argument("--out", type=Path, required=True)
    vp = sub.add_parser("verify")
    vp.add_argument("image", type=Path)
    args = p.parse_args(argv)

    if args.command == "layer":
        desc = write_layer(args.root, args.path, args.epoch, args.out)
        desc["file"] = str(args.out.resolve())
        text = json.dumps(desc, sort_keys=True)
        args.out.with_name(args.out.name + ".json").write_text(text + "\n")
        print(text)
    elif args.command == "image":
        layers = []
        for desc_path in args.layer:
            desc = json.loads(desc_path.read_text())
            layers.append((desc, Path(desc["file"])))
        digest = write_image(layers, args.ref, args.epoch, json.loads(args.entrypoint),
                             json.loads(args.cmd) if args.cmd else None, args.env,
                             _pairs(args.label), args.history, args.out)
        print(digest)
    else:
        try:
            ref, digest = verify(args.image)
        except (ValueError, KeyError, tarfile.TarError) as e:
            print(f"oci_image: {args.image}: {e}", file=sys.stderr)
            return 1
        print(ref, digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
