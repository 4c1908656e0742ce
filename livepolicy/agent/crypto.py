"""Checkpoint images encrypted at rest and in transit: chunked AES-256-GCM.

A checkpoint image is process memory, so the agent never writes it in clear. The apply
engine generates one random 32-byte key per migration and gives it to both agents in
`prepare`; agents keep it in memory only (never on disk), so an image file and its key
are never stored together.

Format (the STREAM construction of Hoang et al., with AES-GCM as the AEAD):

    header  = b"LPIMG\\x01" || nonce_prefix (7 random bytes) || chunk_size (u32, big-endian)
    chunk i = AES-GCM(key, nonce = nonce_prefix || i (u32 BE) || last (1 byte),
                      plaintext_i, aad = header || context)

Every chunk but the last holds exactly `chunk_size` plaintext bytes; the last one (possibly
empty) is sealed with last=1, so truncation, reordering, or splicing chunks between images
fails authentication. `context` binds the image to one migration and one pod, so an image
cannot be replayed under another migration id or restored as another pod. Chunking keeps
memory bounded for multi-GiB images (a CRIU runtime streams through the same writer).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"LPIMG\x01"
PREFIX_LEN = 7
TAG_LEN = 16
KEY_LEN = 32
DEFAULT_CHUNK = 1 << 20
MAX_CHUNK = 16 << 20
HEADER_LEN = len(MAGIC) + PREFIX_LEN + 4
MAX_CHUNKS = 2**32 - 1


class ImageCorrupt(Exception):
    """The image failed authentication: wrong key, wrong migration/pod, tampered or truncated."""


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


def decode_key(value: object) -> bytes:
    """Base64 (standard or URL-safe) of exactly 32 bytes -> key bytes; ValueError otherwise."""
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("key must be base64 of 32 random bytes")
    text = value.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("key must be base64 of 32 random bytes") from None
    if len(key) != KEY_LEN:
        raise ValueError(f"key must be 32 bytes (AES-256), got {len(key)}")
    return key


def new_key() -> str:
    """A fresh migration key in the form `prepare` expects (what the apply engine sends)."""
    return base64.b64encode(os.urandom(KEY_LEN)).decode("ascii")


def key_id(key: bytes) -> str:
    """A non-secret fingerprint, so a re-sent key can be checked without storing the key."""
    return hashlib.sha256(b"livepolicy-agent-key-id\x00" + key).hexdigest()[:32]


def image_context(mid: str, namespace: str, name: str, uid: str) -> bytes:
    return f"livepolicy-image/v1\x00{mid}\x00{namespace}/{name}\x00{uid}".encode()


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index > MAX_CHUNKS:
        raise ValueError("image too large for one key")
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class EncryptingWriter:
    """File-like sink: plaintext in, sealed chunks out to `out` (which sees only ciphertext)."""

    def __init__(self, key: bytes, context: bytes, out: Sink, chunk_size: int = DEFAULT_CHUNK):
        if not 0 < chunk_size <= MAX_CHUNK:
            raise ValueError("bad chunk size")
        self._aead = AESGCM(key)
        self._prefix = os.urandom(PREFIX_LEN)
        self._header = MAGIC + self._prefix + struct.pack(">I", chunk_size)
        self._aad = self._header + context
        self._out = out
        self._chunk = chunk_size
        self._buf = bytearray()
        self._index = 0
        self._closed = False
        self.plaintext_sha256 = hashlib.sha256()
        self.plaintext_bytes = 0
        out.write(self._header)

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("writer closed")
        self.plaintext_sha256.update(data)
        self.plaintext_bytes += len(data)
        self._buf += data
        # Keep at least one byte back: only close() knows which chunk is the last.
        while len(self._buf) > self._chunk:
            self._seal(bytes(self._buf[: self._chunk]), last=False)
            del self._buf[: self._chunk]
        return len(data)

    def _seal(self, plain: bytes, *, last: bool) -> None:
        nonce = _nonce(self._prefix, self._index, last)
        self._out.write(self._aead.encrypt(nonce, plain, self._aad))
        self._index += 1

    def close(self) -> None:
        if not self._closed:
            self._seal(bytes(self._buf), last=True)
            self._buf.clear()
            self._closed = True


def decrypt_stream(key: bytes, context: bytes, src: BinaryIO) -> Iterator[bytes]:
    """Yield authenticated plaintext chunks; raises ImageCorrupt on any tampering.

    Each yielded chunk is authentic, but truncation is only detected at the end: consumers
    must read to the end before acting on the content.
    """
    header = src.read(HEADER_LEN)
    if len(header) != HEADER_LEN or not header.startswith(MAGIC):
        raise ImageCorrupt("not a livepolicy image (bad header)")
    prefix = header[len(MAGIC) : len(MAGIC) + PREFIX_LEN]
    (chunk_size,) = struct.unpack(">I", header[-4:])
    if not 0 < chunk_size <= MAX_CHUNK:
        raise ImageCorrupt("bad chunk size in image header")
    aead = AESGCM(key)
    aad = header + context
    sealed = chunk_size + TAG_LEN
    index = 0
    current = src.read(sealed)
    while True:
        following = src.read(sealed) if len(current) == sealed else b""
        last = not following
        if len(current) < TAG_LEN:
            raise ImageCorrupt("image truncated")
        try:
            yield aead.decrypt(_nonce(prefix, index, last), current, aad)
        except InvalidTag:
            raise ImageCorrupt(
                "image failed authentication (wrong key or migration, tampered or truncated)"
            ) from None
        if last:
            return
        index += 1
        current = following
