"""The image store: `<state_dir>/images/<migration-id>/image.lpimg`, encrypted, owner-only.

Only this module builds image paths. A migration id is validated again here and the
resolved directory must sit directly under the images root, so no identifier can reach
outside it even if a caller forgot to validate. Directories are 0700, files 0600, writes
go through a temp file and an atomic rename, and a partially received upload never
becomes an image.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

from livepolicy.agent.crypto import EncryptingWriter, decrypt_stream
from livepolicy.agent.errors import ApiError
from livepolicy.agent.fsutil import (
    commit_tmp,
    ensure_private_dir,
    open_private_tmp,
    remove_stale_tmp,
)
from livepolicy.agent.ids import check_mid

IMAGE_NAME = "image.lpimg"
COPY_CHUNK = 1 << 16

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    bytes: int
    sha256: str  # of the ciphertext, as stored and sent


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _HashingSink:
    """Counts and hashes what it writes to the underlying file; enforces a size bound."""

    def __init__(self, fh: BinaryIO, limit: int) -> None:
        self.fh = fh
        self.limit = limit
        self.count = 0
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.count += len(data)
        if self.count > self.limit:
            raise ApiError(507, "image_too_large", f"image exceeds {self.limit} bytes")
        self.sha.update(data)
        return self.fh.write(data)


class ImageStore:
    def __init__(self, state_dir: Path, max_image_bytes: int) -> None:
        self.root = ensure_private_dir(state_dir / "images").resolve()
        self.max_image_bytes = max_image_bytes

    def dir_for(self, mid: str) -> Path:
        check_mid(mid)
        path = self.root / mid
        # check_mid already excludes '/', '.' and '%'; this is the belt to its braces.
        if path.parent != self.root or os.path.normpath(path) != str(path):
            raise ApiError(400, "invalid_identifier", "migration id escapes the image store")
        return path

    def path_for(self, mid: str) -> Path:
        return self.dir_for(mid) / IMAGE_NAME

    def info(self, mid: str) -> ImageInfo | None:
        path = self.path_for(mid)
        if not path.is_file() or path.is_symlink():
            return None
        sha = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(COPY_CHUNK), b""):
                sha.update(block)
        return ImageInfo(path.stat().st_size, sha.hexdigest())

    def size(self, mid: str) -> int:
        path = self.path_for(mid)
        return path.stat().st_size if path.is_file() and not path.is_symlink() else 0

    def _write(
        self,
        mid: str,
        fill: Callable[[_HashingSink], T],
        expected_sha256: str | None = None,
    ) -> tuple[T, ImageInfo]:
        directory = ensure_private_dir(self.dir_for(mid))
        tmp, fh = open_private_tmp(directory, IMAGE_NAME)
        sink = _HashingSink(fh, self.max_image_bytes)
        try:
            result = fill(sink)
            if expected_sha256 is not None and sink.sha.hexdigest() != expected_sha256:
                raise ApiError(400, "checksum_mismatch", "image sha256 differs from the sender's")
            commit_tmp(tmp, fh, directory / IMAGE_NAME)
        except BaseException:
            fh.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return result, ImageInfo(sink.count, sink.sha.hexdigest())

    def write_encrypted(
        self, mid: str, key: bytes, context: bytes, produce: Callable[[EncryptingWriter], T]
    ) -> tuple[T, ImageInfo, str]:
        """Run `produce(writer)` with a writer that encrypts into the image file.

        Returns (produce's result, ciphertext info, plaintext sha256)."""

        def fill(sink: _HashingSink) -> tuple[T, str]:
            writer = EncryptingWriter(key, context, sink)
            out = produce(writer)
            writer.close()
            return out, writer.plaintext_sha256.hexdigest()

        (out, plain_sha), info = self._write(mid, fill)
        return out, info, plain_sha

    def receive(
        self, mid: str, body: Readable, length: int, expected_sha256: str | None = None
    ) -> ImageInfo:
        """Store exactly `length` bytes read from `body` (an upload) as the image; a short or
        mismatching upload leaves any previous image untouched."""
        if length > self.max_image_bytes:
            raise ApiError(413, "too_large", f"image larger than {self.max_image_bytes} bytes")

        def fill(sink: _HashingSink) -> None:
            remaining = length
            while remaining > 0:
                block = body.read(min(COPY_CHUNK, remaining))
                if not block:
                    raise ApiError(400, "incomplete_body", "upload ended before Content-Length")
                sink.write(block)
                remaining -= len(block)

        _, info = self._write(mid, fill, expected_sha256)
        return info

    def open(self, mid: str) -> BinaryIO:
        path = self.path_for(mid)
        if not path.is_file() or path.is_symlink():
            raise ApiError(409, "no_image", f"no image for migration {mid} on this node")
        return path.open("rb")

    def decrypt(self, mid: str, key: bytes, context: bytes) -> Iterator[bytes]:
        with self.open(mid) as fh:
            yield from decrypt_stream(key, context, fh)

    def delete(self, mid: str) -> bool:
        directory = self.dir_for(mid)
        if directory.is_symlink():
            directory.unlink()
            return True
        if not directory.exists():
            return False
        shutil.rmtree(directory)
        return True

    def list_mids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())

    def remove_partial_uploads(self) -> None:
        for mid in self.list_mids():
            directory = self.root / mid
            if directory.is_dir() and not directory.is_symlink():
                remove_stale_tmp(directory)
