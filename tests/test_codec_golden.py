"""Golden `.latent` files (tests/data/latent_golden, made by its make.py): the integer half of decoding (header
parsing and entropy decoding to symbols) must give the same symbols on every machine and thread count; only the
neural decoder after it is floating point (see README "Determinism")."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent / "data" / "latent_golden"
GOLDEN = json.loads((HERE / "golden.json").read_text())


def _symbols(data: bytes):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", HERE / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    return make.symbols_of(data)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_entropy_decoded_symbols_match_the_stored_hash(name):
    data = (HERE / name).read_bytes()
    assert len(data) == GOLDEN[name]["bytes"]
    shape, q = _symbols(data)
    assert list(shape) == GOLDEN[name]["shape"] and q.shape == tuple(shape)
    assert hashlib.sha256(np.ascontiguousarray(q, dtype=np.int64).tobytes()).hexdigest() == \
        GOLDEN[name]["symbols_sha256"]
    assert np.abs(q).sum() > 0  # not a degenerate all-zero latent


def test_golden_files_decode_with_the_shipped_weights_to_their_size_and_mode():
    from latentkit.codec import decompress

    gray = decompress((HERE / "gray_q20_41x23.latent").read_bytes())
    assert (gray.width, gray.height, gray.grayscale, gray.alpha) == (41, 23, True, None)
    rgba = decompress((HERE / "rgba_q90_33x17.latent").read_bytes())
    ramp = (np.arange(33)[None, :] * 255 // 32 * np.ones((17, 1))).astype(np.uint8)
    assert (rgba.width, rgba.height) == (33, 17) and np.array_equal(rgba.alpha, ramp)  # alpha is lossless


def test_a_header_claiming_a_huge_image_is_refused_before_any_allocation(tmp_path):
    """65535 x 65535 pixels (an 8192 x 8192 x 4 latent: 1 GiB as float32) behind a valid CRC and a 900-byte
    payload: refused from the header alone under the default pixel limit; peak RSS grows by less than 64 MB.
    (The payload length cannot bound the size: a flat latent costs ~1e-7 bits a symbol, so a few bytes can be a
    valid huge image; the pixel limit is what bounds memory, as for Pillow's decompression-bomb check.)"""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import dataclasses, resource, sys
        from latentkit.codec import decompress, format
        from latentkit.errors import LatentkitError
        from latentkit.model import load_vae
        data = open({str(HERE / "rgb_q60_256x192.latent")!r}, "rb").read()
        vae = load_vae()
        decompress(data, vae)  # the model's own working memory is in the baseline
        huge = format.pack(dataclasses.replace(format.parse(data), width=65535, height=65535))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            decompress(huge, vae)
            sys.exit("accepted")
        except LatentkitError as e:
            print(e)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    message, grown_mb = out.stdout.strip().splitlines()[-2:]
    assert "65535x65535" in message and "--max-pixels" in message, message
    assert int(grown_mb) < 64


def test_the_entropy_coders_probability_tables_are_the_format_s():
    """The integer probability tables every encoder and decoder builds (codec.entropy.tables, format version 2),
    pinned by their sha256: a change to how they are computed (e.g. the mirrored half) must leave every integer
    as it was, or files would stop decoding across versions and machines."""
    import importlib

    tables = importlib.import_module("latentkit.codec.entropy.tables")
    probs, bits = tables.tables()
    assert probs.shape == (tables.NUM_SCALES, tables.NUM_OFFSETS, tables.ALPHABET)
    assert hashlib.sha256(probs.astype("<u4").tobytes()).hexdigest() == \
        "0fdf36f8449eb82ef17e2512b9a5f92dc2f27c0ee5387cc2f5e33807f219cea6"
    assert np.all(probs >= 1) and np.all(probs < 2 ** 30)
