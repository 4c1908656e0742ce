"""The chunked AES-256-GCM image format: round trips, and every kind of tampering fails."""

from __future__ import annotations

import io
import os

import pytest

from livepolicy.agent.crypto import (
    HEADER_LEN,
    TAG_LEN,
    EncryptingWriter,
    ImageCorrupt,
    decrypt_stream,
    image_context,
)

KEY = os.urandom(32)
CTX = image_context("m1", "default", "web", "uid-web")
CHUNK = 64


def seal(plain: bytes, key: bytes = KEY, ctx: bytes = CTX) -> bytes:
    out = io.BytesIO()
    writer = EncryptingWriter(key, ctx, out, chunk_size=CHUNK)
    for i in range(0, len(plain), 37):  # odd write sizes
        writer.write(plain[i : i + 37])
    writer.close()
    return out.getvalue()


def unseal(data: bytes, key: bytes = KEY, ctx: bytes = CTX) -> bytes:
    return b"".join(decrypt_stream(key, ctx, io.BytesIO(data)))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 5 * CHUNK + 3])
def test_round_trip(size: int) -> None:
    plain = os.urandom(size)
    data = seal(plain)
    assert unseal(data) == plain
    chunks = max(1, -(-size // CHUNK))
    assert len(data) == HEADER_LEN + size + chunks * TAG_LEN


def test_same_plaintext_encrypts_differently() -> None:
    assert seal(b"x" * 100) != seal(b"x" * 100)


@pytest.mark.parametrize("cut", ["last_chunk", "chunk_boundary", "header", "one_byte"])
def test_truncation_is_detected(cut: str) -> None:
    data = seal(os.urandom(3 * CHUNK))
    sealed = CHUNK + TAG_LEN
    cut_at = {
        "last_chunk": HEADER_LEN + 2 * sealed,  # whole chunks remain, last flag missing
        "chunk_boundary": HEADER_LEN + sealed,
        "header": HEADER_LEN - 1,
        "one_byte": len(data) - 1,
    }[cut]
    with pytest.raises(ImageCorrupt):
        unseal(data[:cut_at])


def test_reordered_chunks_and_flipped_bits_fail() -> None:
    data = seal(os.urandom(3 * CHUNK))
    sealed = CHUNK + TAG_LEN
    c = [data[HEADER_LEN + i * sealed : HEADER_LEN + (i + 1) * sealed] for i in range(3)]
    with pytest.raises(ImageCorrupt):
        unseal(data[:HEADER_LEN] + c[1] + c[0] + c[2])
    for pos in (0, 8, HEADER_LEN - 1, HEADER_LEN, len(data) - 1):
        flipped = bytearray(data)
        flipped[pos] ^= 0x01
        with pytest.raises(ImageCorrupt):
            unseal(bytes(flipped))


def test_wrong_key_or_context_fails() -> None:
    data = seal(b"secret memory")
    with pytest.raises(ImageCorrupt):
        unseal(data, key=os.urandom(32))
    with pytest.raises(ImageCorrupt):
        unseal(data, ctx=image_context("m2", "default", "web", "uid-web"))
    with pytest.raises(ImageCorrupt):
        unseal(data, ctx=image_context("m1", "default", "web", "uid-other"))
