"""The ``.latent`` container (version 2); byte layout in docs/latent-format.md.

``pack`` and ``parse`` only move bytes: no model, no entropy coding. ``parse`` validates everything it
reads (magic, version, checksum, sizes, side planes) and raises :class:`LatentkitError` with one line.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import LatentkitError
from ..io import DEFAULT_MAX_PIXELS

MAGIC = b"LK"
VERSION = 2
MODEL_ID_BYTES = 8
MAX_ICC_BYTES = 1 << 24
#: the largest width or height a .latent file may have (JPEG's limit): both the encoder and the parser enforce
#: it, so a crafted header cannot ask for a 89-megapixel one-row image whose entropy decoding takes hours
MAX_SIDE = 65535
F_ALPHA, F_ICC, F_GRAY, F_16BIT = 1, 2, 4, 8
ENTROPY_SHIFT = 4  # the high nibble of the flags byte is the entropy model (0..15)


@dataclass
class Container:
    """Everything a `.latent` file holds. ``exponents``/``params``: one int per latent channel."""

    width: int
    height: int
    exponents: np.ndarray  # step exponents, int in [-128, 127]
    entropy_model: int  # 0..15
    params: np.ndarray  # uint8 per channel
    model_id: bytes
    payload: bytes
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    grayscale: bool = False
    bit_depth: int = 8


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise LatentkitError(f"corrupt .latent file: truncated {what}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self, what: str) -> int:
        n = shift = 0
        for _ in range(5):
            b = self.take(1, what)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n
        raise LatentkitError(f"corrupt .latent file: bad {what}")


def _inflate(data: bytes, limit: int, what: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error:
        raise LatentkitError(f"corrupt .latent file: bad {what}") from None
    if len(out) > limit or not d.eof or d.unused_data:
        raise LatentkitError(f"corrupt .latent file: bad {what}")
    return out


def pack(c: Container) -> bytes:
    """Serialise a container (with CRC32). Sizes are not checked here (the encoder does, and :func:`parse`)."""
    flags = (F_ALPHA * (c.alpha is not None) | F_ICC * bool(c.icc_profile) | F_GRAY * c.grayscale
             | F_16BIT * (c.bit_depth == 16) | c.entropy_model << ENTROPY_SHIFT)
    out = bytearray(MAGIC)
    out += bytes([VERSION, flags]) + _varint(c.width) + _varint(c.height) + bytes([len(c.exponents)])
    out += bytes(int(e) + 128 for e in c.exponents) + bytes(int(p) for p in c.params)
    out += c.model_id
    if c.alpha is not None:
        a = c.alpha.astype(c.alpha.dtype.newbyteorder("<"))
        filtered = np.diff(a, axis=1, prepend=np.zeros((a.shape[0], 1), a.dtype))  # wraps: lossless
        z = zlib.compress(filtered.tobytes(), 9)
        out += _varint(len(z) + 1) + bytes([a.dtype.itemsize]) + z
    if c.icc_profile:
        z = zlib.compress(c.icc_profile, 9)
        out += _varint(len(z)) + z
    out += c.payload
    return bytes(out) + zlib.crc32(out).to_bytes(4, "little")


def parse(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Container:
    """Read and validate a `.latent` file. Sizes are checked before anything is allocated."""
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise LatentkitError("not a .latent file (wrong magic bytes)" if data else "empty .latent file")
    if len(data) < len(MAGIC) + 2 + 4:
        raise LatentkitError("corrupt .latent file: truncated header")
    if data[len(MAGIC)] != VERSION:
        raise LatentkitError(f".latent format version {data[len(MAGIC)]} is not supported (this latentkit reads "
                             f"version {VERSION})")
    body, crc = data[:-4], int.from_bytes(data[-4:], "little")
    if zlib.crc32(body) != crc:
        raise LatentkitError("corrupt .latent file: checksum mismatch (truncated or damaged)")
    r = _Reader(body)
    r.take(len(MAGIC) + 1, "header")
    flags = r.take(1, "header")[0]
    width, height = r.varint("width"), r.varint("height")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE) or (max_pixels is not None
                                                                       and width * height > max_pixels):
        raise LatentkitError(f"corrupt or oversized .latent file: image size {width}x{height} "
                             f"(limits: {MAX_SIDE} px a side, {max_pixels or 'no limit on'} pixels; "
                             "--max-pixels N sets the second)")
    channels = r.take(1, "header")[0]
    if channels < 1:
        raise LatentkitError("corrupt .latent file: zero latent channels")
    exponents = np.frombuffer(r.take(channels, "header"), np.uint8).astype(np.int64) - 128
    params = np.frombuffer(r.take(channels, "header"), np.uint8).copy()
    model_id = r.take(MODEL_ID_BYTES, "model id")
    grayscale, bit_depth = bool(flags & F_GRAY), 16 if flags & F_16BIT else 8
    alpha = None
    if flags & F_ALPHA:
        n = r.varint("alpha plane size")
        block = r.take(n, "alpha plane")
        if n < 1 or block[0] not in (1, 2):
            raise LatentkitError("corrupt .latent file: bad alpha plane")
        dtype = np.dtype("<u1" if block[0] == 1 else "<u2")
        raw = _inflate(block[1:], width * height * dtype.itemsize, "alpha plane")
        if len(raw) != width * height * dtype.itemsize:
            raise LatentkitError("corrupt .latent file: bad alpha plane")
        alpha = np.cumsum(np.frombuffer(raw, dtype).reshape(height, width), axis=1, dtype=dtype)
        alpha = alpha.astype(np.uint8 if block[0] == 1 else np.uint16)
    icc = None
    if flags & F_ICC:
        icc = _inflate(r.take(r.varint("ICC profile size"), "ICC profile"), MAX_ICC_BYTES, "ICC profile")
    return Container(width, height, exponents, flags >> ENTROPY_SHIFT, params, model_id, body[r.pos:], alpha,
                     icc, grayscale, bit_depth)
