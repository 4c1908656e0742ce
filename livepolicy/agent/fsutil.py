"""Owner-only files and crash-safe writes.

Everything the agent stores can be sensitive (encrypted process memory, migration
records), so directories are 0700 and files 0600 regardless of the umask, and nothing is
opened through a symlink. State files are replaced atomically (temp file, fsync,
os.replace, fsync of the directory) so a crash leaves either the old or the new version.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600
TMP_SUFFIX = ".tmp"
# fsync guards against power loss, which no test can observe; in-process test agents turn
# it off to stay fast. A killed agent process loses nothing either way (page cache).
SYNC = True


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed; refuse symlinks; force mode 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{path} is not a plain directory")
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def fsync_dir(path: Path) -> None:
    if not SYNC:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_private_tmp(directory: Path, stem: str) -> tuple[Path, BinaryIO]:
    """A new, exclusive, owner-only temp file in `directory` (same filesystem as its target)."""
    tmp = directory / f".{stem}.{secrets.token_hex(6)}{TMP_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return tmp, os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def commit_tmp(tmp: Path, fh: BinaryIO, target: Path) -> None:
    """fsync and close `fh`, then atomically move `tmp` over `target`."""
    fh.flush()
    if SYNC:
        os.fsync(fh.fileno())
    fh.close()
    os.replace(tmp, target)
    fsync_dir(target.parent)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    tmp, fh = open_private_tmp(target.parent, target.name)
    try:
        fh.write(data)
        commit_tmp(tmp, fh, target)
    except BaseException:
        fh.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_stale_tmp(directory: Path) -> None:
    """Delete temp files a crash left behind (they were never committed)."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        name = entry.name
        if name.startswith(".") and name.endswith(TMP_SUFFIX) and not entry.is_symlink():
            with contextlib.suppress(OSError):
                entry.unlink()
