"""Encoder-side latent refinement (latentkit/codec/refine.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentkit import model as M
from latentkit.codec import decompress, quant, refine
from latentkit.codec.api import LatentEncoder
from latentkit.errors import LatentkitError
from latentkit.io import Image, read_image

from conftest import kodak


@pytest.fixture(scope="module")
def crop():
    return Image(read_image(kodak("kodim05")).rgb[:, 100:164, 200:296].contiguous())


def _decoded_mse(vae, image: Image, exponents: np.ndarray, symbols: np.ndarray) -> float:
    rec = M.decode(vae, torch.from_numpy(quant.dequantize(symbols, exponents))[None])
    return (rec[..., :image.height, :image.width] - image.batch()).square().mean().item()


def test_refinement_lowers_the_error_at_the_same_steps_and_repeats(micro_vae, crop):
    plain = LatentEncoder(crop, micro_vae)
    refined = LatentEncoder(crop, micro_vae, latent=plain.latent, gains=plain.gains, refine_steps=8)
    exp_a, sym_a = plain.symbols(40)
    exp_b, sym_b = refined.symbols(40)
    assert np.array_equal(exp_a, exp_b)  # the same quantization, other symbols
    assert not np.array_equal(sym_a, sym_b)
    assert _decoded_mse(micro_vae, crop, exp_b, sym_b) < 0.9 * _decoded_mse(micro_vae, crop, exp_a, sym_a)
    again = LatentEncoder(crop, micro_vae, latent=plain.latent, gains=plain.gains, refine_steps=8)
    assert again.pack(40) == refined.pack(40)  # deterministic


def test_zero_steps_change_nothing(micro_vae, crop):
    plain = LatentEncoder(crop, micro_vae)
    assert LatentEncoder(crop, micro_vae, latent=plain.latent, gains=plain.gains, refine_steps=0).pack(50) \
        == plain.pack(50)


@pytest.mark.parametrize("steps", [-1, 1.5, True])
def test_bad_steps(micro_vae, crop, steps):
    with pytest.raises(LatentkitError, match="refinement steps"):
        LatentEncoder(crop, micro_vae, refine_steps=steps)


def test_images_that_would_tile_are_refused(micro_vae, crop, monkeypatch):
    from latentkit import tiling

    monkeypatch.setattr(tiling, "should_tile", lambda *a, **k: True)
    with pytest.raises(LatentkitError, match="without refinement"):
        LatentEncoder(crop, micro_vae, refine_steps=2).pack(40)


def test_cli_refine(micro_vae, tmp_path, capsys, crop):
    from latentkit.cli import main
    from latentkit.io import write_image

    folder = M.save_vae(micro_vae, tmp_path / "m")
    src = write_image(crop, tmp_path / "in.png")
    assert main(["encode", str(src), "-o", str(tmp_path / "a.latent"), "--model", str(folder), "--refine", "3",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["refine_steps"] == 3
    assert main(["decode", str(tmp_path / "a.latent"), "-o", str(tmp_path / "a.png"), "--model", str(folder)]) == 0
    assert main(["encode", str(src), "-o", str(tmp_path / "b.latent"), "--refine", "-2"]) == 2
    assert "refinement steps must be an integer >= 0, got -2" in capsys.readouterr().err


def test_an_overshooting_refinement_keeps_the_best_iterate(micro_vae, crop, monkeypatch):
    """Steps far too large make every iterate worse than the start: the unrefined symbols come back (seen on
    kodim02 at quality 30, where coarse steps made the rounding jump: 23.8 dB at 2.7x the bytes before the guard)."""
    monkeypatch.setattr(refine, "LEARNING_RATE", 1e3)
    plain = LatentEncoder(crop, micro_vae)
    wild = LatentEncoder(crop, micro_vae, latent=plain.latent, gains=plain.gains, refine_steps=3)
    assert np.array_equal(wild.symbols(40)[1], plain.symbols(40)[1])
