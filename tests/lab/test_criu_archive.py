"""The plaintext archive inside criu images: round trip, and nothing in it can escape."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from livepolicy.agent.crypto import EncryptingWriter, ImageCorrupt, decrypt_stream
from livepolicy.agent.errors import ApiError
from livepolicy.agent.runtimes import criu_archive as archive


def _dump(root: Path) -> None:
    for d in ("pre-0", "final"):
        (root / d).mkdir(parents=True)
        (root / d / "pages-1.img").write_bytes(os.urandom(3 * archive.BLOCK + 17))
        (root / d / "core-1.img").write_bytes(b"core")
        (root / d / "dump.log").write_text("not shipped")
    os.symlink("../pre-0", root / "final" / "parent")
    os.symlink("/etc/passwd", root / "final" / "evil")  # never shipped


def _pack(root: Path, dirs: list[str]) -> bytes:
    out = io.BytesIO()
    archive.write_archive(out, {"namespace": "a", "name": "b"}, root, dirs)
    return out.getvalue()


def _chunks(data: bytes, size: int = 65536) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def test_round_trip_through_encryption(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _dump(src)
    key = os.urandom(32)
    sealed = io.BytesIO()
    writer = EncryptingWriter(key, b"ctx", sealed)
    archive.write_archive(writer, {"namespace": "a", "name": "b"}, src, ["pre-0", "final"])
    writer.close()
    sealed.seek(0)
    manifest, sha, nbytes = archive.read_archive(decrypt_stream(key, b"ctx", sealed),
                                                 tmp_path / "out")
    assert sha == writer.plaintext_sha256.hexdigest()
    assert manifest["name"] == "b" and manifest["dirs"] == ["pre-0", "final"]
    out = tmp_path / "out"
    for d in ("pre-0", "final"):
        assert (out / d / "pages-1.img").read_bytes() == (src / d / "pages-1.img").read_bytes()
        assert not (out / d / "dump.log").exists()
        assert stat.S_IMODE((out / d).stat().st_mode) == 0o700
        assert stat.S_IMODE((out / d / "pages-1.img").stat().st_mode) == 0o600
    assert os.readlink(out / "final" / "parent") == "../pre-0"
    assert not (out / "final" / "evil").exists()
    assert nbytes == 2 * (3 * archive.BLOCK + 17 + 4)


def test_tampered_ciphertext_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _dump(src)
    key = os.urandom(32)
    sealed = io.BytesIO()
    writer = EncryptingWriter(key, b"ctx", sealed)
    archive.write_archive(writer, {}, src, ["pre-0"])
    writer.close()
    data = bytearray(sealed.getvalue())
    data[len(data) // 2] ^= 1
    with pytest.raises(ImageCorrupt):
        archive.read_archive(decrypt_stream(key, b"ctx", io.BytesIO(bytes(data))),
                             tmp_path / "out")


def _forged(entries: list[dict[str, object]], payload: bytes = b"") -> bytes:
    head = archive.MAGIC + json.dumps({"format": archive.FORMAT, "dirs": []}).encode() + b"\n"
    body = b"".join(json.dumps(e).encode() + b"\n" for e in entries)
    return head + body + payload


@pytest.mark.parametrize("entries", [
    [{"t": "d", "p": ".."}],
    [{"t": "d", "p": "a/b"}],
    [{"t": "f", "p": "../x", "n": 0}],
    [{"t": "f", "p": "/etc/x", "n": 0}],
    [{"t": "d", "p": "a"}, {"t": "f", "p": "a/../../x", "n": 0}],
    [{"t": "d", "p": "a"}, {"t": "f", "p": "b/x", "n": 0}],
    [{"t": "d", "p": "a"}, {"t": "l", "p": "a/parent", "to": "/etc"}],
    [{"t": "d", "p": "a"}, {"t": "l", "p": "a/parent", "to": "../zzz"}],
    [{"t": "d", "p": "a"}, {"t": "l", "p": "a/other", "to": "../a"}],
    [{"t": "d", "p": "a"}, {"t": "f", "p": "a/x", "n": -1}],
    [{"t": "d", "p": "a"}, {"t": "x", "p": "a/x"}],
    [{"t": "d", "p": "a"}, {"t": "end", "files": 1, "bytes": 0}],
])
def test_forged_entries_are_refused(tmp_path: Path, entries: list[dict[str, object]]) -> None:
    with pytest.raises(ApiError) as err:
        archive.read_archive(_chunks(_forged(entries)), tmp_path / "out")
    assert err.value.code == "image_invalid"
    assert not (tmp_path / "x").exists()


def test_truncated_and_trailing_bytes_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _dump(src)
    data = _pack(src, ["pre-0", "final"])
    with pytest.raises(ApiError):
        archive.read_archive(_chunks(data[:-10]), tmp_path / "a")
    with pytest.raises(ApiError):
        archive.read_archive(_chunks(data + b"x"), tmp_path / "b")
    manifest, _, _ = archive.read_archive(_chunks(data, 7), tmp_path / "c")  # tiny chunks
    assert manifest["dirs"] == ["pre-0", "final"]


@pytest.mark.parametrize("size", [0, 1, archive.BLOCK - 1, archive.BLOCK, 3 * archive.BLOCK + 5])
def test_page_stream_sealer_writes_the_agent_image_format(size: int) -> None:
    """The lean sealer's output is read by the agent's own decrypt_stream, and any cut or
    flipped byte fails authentication."""
    import socket

    from livepolicy.agent.runtimes.criu_pages import StreamSealer

    key, ctx = os.urandom(32), b"ctx"
    data = os.urandom(size)
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        got = bytearray()
        import threading

        def read() -> None:
            while chunk := b.recv(1 << 20):
                got.extend(chunk)

        t = threading.Thread(target=read)
        t.start()
        sealer = StreamSealer(key, ctx, a)
        sealer.write(data[: size // 3])
        sealer.write(memoryview(data)[size // 3 :])
        sealer.close()
        a.shutdown(socket.SHUT_WR)
        t.join()
    sealed = bytes(got)
    assert b"".join(decrypt_stream(key, ctx, io.BytesIO(sealed))) == data
    for bad in (sealed[:-1], sealed[:-(16 + 1)], sealed[:-1] + bytes([sealed[-1] ^ 1])):
        with pytest.raises(ImageCorrupt):
            b"".join(decrypt_stream(key, ctx, io.BytesIO(bad)))
    with pytest.raises(ImageCorrupt):
        b"".join(decrypt_stream(key, b"other", io.BytesIO(sealed)))


def _live_pack(root: Path, grow: bytes, outcome: list[str | None]) -> bytes:
    """A live archive of `root/dump` while a thread appends `grow` to its page file in
    pieces, then ends the dump with `outcome[0]`."""
    import threading
    import time

    page = root / "dump" / "pages-1.img"

    def dump() -> None:
        with page.open("ab", buffering=0) as fh:
            for i in range(0, len(grow), 300_000):
                fh.write(grow[i : i + 300_000])
                time.sleep(0.002)
        (root / "dump" / "inventory.img").write_bytes(b"inventory, written last")

    t = threading.Thread(target=dump)
    t.start()
    out = io.BytesIO()
    archive.write_live(out, {"stream_id": "s"}, root, "dump",
                       lambda: None if t.is_alive() else outcome[0],
                       lambda name: name.startswith("pages-"), poll_s=0.001)
    t.join()
    return out.getvalue()


def test_live_archive_streams_a_growing_page_file_then_the_rest(tmp_path: Path) -> None:
    """A page file sent while it grows arrives whole, and the files written after it (as
    CRIU writes inventory.img last) follow once the dump ended."""
    src = tmp_path / "src"
    (src / "dump").mkdir(parents=True)
    (src / "dump" / "core-1.img").write_bytes(b"core")
    (src / "dump" / "dump.log").write_text("not shipped")
    grow = os.urandom(3 * archive.BLOCK + 12345)
    data = _live_pack(src, grow, [""])
    assert data.count(b'"t": "a"') > 1  # sent in pieces, while it grew
    out = tmp_path / "out"
    (out / "dump").mkdir(parents=True)
    manifest, _, nbytes = archive.read_archive(
        _chunks(data, archive.BLOCK), out, existing=True, select=None,
        append=lambda name: name.startswith("pages-"))
    assert manifest["live"] is True and manifest["dirs"] == ["dump"]
    assert (out / "dump" / "pages-1.img").read_bytes() == grow
    assert (out / "dump" / "inventory.img").read_bytes() == b"inventory, written last"
    assert (out / "dump" / "core-1.img").read_bytes() == b"core"
    assert not (out / "dump" / "dump.log").exists()
    assert stat.S_IMODE((out / "dump" / "pages-1.img").stat().st_mode) == 0o600
    assert nbytes == len(grow) + 4 + len(b"inventory, written last")
    # Pieces are refused where no growing file is expected, and for other names.
    with pytest.raises(ApiError) as err:
        archive.read_archive(_chunks(data), tmp_path / "o2", select=None)
    assert err.value.code == "image_invalid"
    (tmp_path / "o3" / "dump").mkdir(parents=True)
    with pytest.raises(ApiError) as err:
        archive.read_archive(_chunks(data), tmp_path / "o3", existing=True,
                             append=lambda name: name == "core-1.img")
    assert err.value.code == "image_invalid"


def test_live_archive_of_a_failed_dump_fails_the_restore(tmp_path: Path) -> None:
    """A dump that failed ends the stream with why, which the destination reports as a
    CRIU failure (so the migration rolls back) instead of restoring half an image."""
    src = tmp_path / "src"
    (src / "dump").mkdir(parents=True)
    data = _live_pack(src, os.urandom(archive.BLOCK), ["criu dump failed: no such task"])
    assert b"inventory" not in data  # nothing after the failure
    (tmp_path / "out" / "dump").mkdir(parents=True)
    with pytest.raises(ApiError) as err:
        archive.read_archive(_chunks(data), tmp_path / "out", existing=True, select=None,
                             append=lambda name: name.startswith("pages-"))
    assert err.value.code == "criu_failed" and "no such task" in err.value.message
