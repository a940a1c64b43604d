"""Seeded mutation fuzz of `.latent` parsing and decoding: every damaged file gives LatentkitError, nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from latentkit.codec import compress, decompress
from latentkit.errors import LatentkitError
from latentkit.io import Image, from_pil


def _mutations(data: bytes, n: int, seed: int):
    rng = np.random.default_rng(seed)
    yield b""
    for i in range(n):
        kind = i % 4
        b = bytearray(data)
        if kind == 0:  # truncate
            yield bytes(b[:rng.integers(0, len(b))])
        elif kind == 1:  # flip 1..4 distinct bits (the same bit twice would give back the original)
            for k in rng.choice(len(b) * 8, size=min(len(b) * 8, rng.integers(1, 5)), replace=False):
                b[k // 8] ^= 1 << (k % 8)
            yield bytes(b)
        elif kind == 2:  # overwrite a run with random bytes
            start = rng.integers(0, len(b))
            run = rng.integers(1, 9)
            b[start:start + run] = rng.integers(0, 256, len(b[start:start + run]), dtype=np.uint8).tobytes()
            yield bytes(b) if bytes(b) != data else bytes(b) + b"x"
        else:  # random bytes, sometimes behind the right magic
            junk = rng.integers(0, 256, rng.integers(0, 64), dtype=np.uint8).tobytes()
            yield (data[:rng.integers(0, 8)] + junk) if rng.integers(2) else junk


def _fuzz(vae, data: bytes, n: int, seed: int) -> None:
    for m in _mutations(data, n, seed):
        with pytest.raises(LatentkitError) as e:
            decompress(m, vae)
        assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def samples(micro_vae):
    rgb = Image(torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(3)))
    rgba = PILImage.fromarray(np.random.default_rng(3).integers(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA")
    rgba.info["icc_profile"] = b"icc" * 20
    return [compress(rgb, micro_vae, quality=90), compress(from_pil(rgba), micro_vae, quality=40)]


def test_fuzz_mutations(micro_vae, samples):
    for k, data in enumerate(samples):
        _fuzz(micro_vae, data, 1500, seed=k)


def test_fuzz_with_valid_checksum(micro_vae, samples):
    """Damage behind a recomputed CRC must still fail cleanly (the parser and coder checks, not the CRC)."""
    import zlib

    rng = np.random.default_rng(7)
    for data in samples:
        for _ in range(100):
            b = bytearray(data[:-4])
            k = rng.integers(3, len(b) * 8)  # keep the magic and version
            b[k // 8] ^= 1 << (k % 8)
            b = bytes(b[:rng.integers(len(b) // 2, len(b) + 1)]) if rng.integers(2) else bytes(b)
            m = b + zlib.crc32(b).to_bytes(4, "little")
            try:
                out = decompress(m, micro_vae)
            except LatentkitError as e:
                assert "\n" not in str(e)
            else:  # a flip that still decodes (e.g. in a step exponent) must give a well-formed image
                assert out.rgb.ndim == 3


@pytest.mark.slow
def test_fuzz_mutations_many(micro_vae, samples):
    for k, data in enumerate(samples):
        _fuzz(micro_vae, data, 20000, seed=100 + k)


#: payload edits (offset, bytes written there) that make constriction raise AssertionError on the stream below
ASSERTING_EDITS = [(30, "8c13"), (3, "98e0"), (2, "77f9aa9a"), (4, "6ac39e82"), (33, "49")]


def test_entropy_decoder_turns_coder_assertions_into_latentkit_errors():
    """constriction raises AssertionError on some invalid streams (seen as a CLI traceback): the entropy layer
    must turn every failure into LatentkitError. Integer-only, so the same cases on every machine."""
    from latentkit.codec import entropy

    q = np.round(np.random.default_rng(0).normal(0, 3, (4, 6, 6))).astype(np.int64)
    plan = entropy.choose_model(q)
    data = entropy.encode_symbols(q, plan)
    raw_assertions = 0
    for offset, edit in ASSERTING_EDITS:
        b = bytearray(data)
        b[offset:offset + len(edit) // 2] = bytes.fromhex(edit)
        try:
            entropy.stream._decode_symbols(bytes(b), q.shape, plan.model, plan.params)
        except AssertionError:
            raw_assertions += 1
        except Exception:  # noqa: BLE001 - only the public function's behaviour is asserted below
            pass
        with pytest.raises(LatentkitError) as e:
            entropy.decode_symbols(bytes(b), q.shape, plan.model, plan.params)
        assert "\n" not in str(e.value)
    assert raw_assertions > 0  # the damage this test is about did occur
    with pytest.raises(LatentkitError, match="empty"):
        entropy.decode_symbols(b"", q.shape, plan.model, plan.params)
