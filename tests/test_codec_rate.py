"""The differentiable rate estimate (latentkit.codec.rate) against the real entropy coder, and its gradient."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from latentkit.codec import allocate, entropy, quant, rate

CROPS = Path(__file__).resolve().parent / "data" / "ssimulacra2"


@pytest.fixture(scope="module")
def codec_vae():
    from latentkit import load_vae

    return load_vae("codec", standalone=True)


@pytest.mark.parametrize("name", ["k01", "k13", "k23"])
def test_the_estimate_follows_real_payloads_of_the_shipped_model(codec_vae, name):
    """Real Kodak crops through the shipped codec model at three qualities: the estimate is within 20% of the
    payload the coder writes (measured 0.98-1.07 on six crops), and grows with the quality as the payload does."""
    from latentkit import io as lkio
    from latentkit import model as lkmodel

    image = lkio.read_image(CROPS / f"{name}_ref.png")
    z = lkmodel.encode(codec_vae, image.batch())[0].float().numpy()
    gains = allocate.decoder_gains(codec_vae, z)
    estimates = []
    for quality in (20, 50, 80):
        symbols = quant.quantize(z, allocate.choose_exponents(z, gains, quality))
        real = len(entropy.encode_symbols(symbols, entropy.choose_model(symbols))) * 8
        est = float(rate.bits(torch.from_numpy(symbols).float()[None]))
        assert 0.8 < real / est < 1.25, (quality, real, est)
        estimates.append(est)
    assert estimates[0] < estimates[1] < estimates[2]


def test_laplace_bits_are_a_distribution_and_a_code_length():
    """Over all integer residuals the probabilities sum to 1 for any scale and centre; a residual at the
    centre costs less than one away from it."""
    k = torch.arange(-200, 201).float()
    for b in (0.05, 0.7, 5.0):
        for centre in (0.0, 0.3):
            p = 2 ** -rate.laplace_bits(k - centre, torch.full_like(k, b))
            assert abs(float(p.sum()) - 1) < 1e-4
    b = torch.tensor([1.0, 1.0])
    small, large = rate.laplace_bits(torch.tensor([0.0, 3.0]), b)
    assert small < 1.5 < large


def test_structure_costs_less_than_the_same_symbols_shuffled_and_the_gradient_lowers_the_estimate():
    """The estimate prices prediction errors, as the coder does, not symbol magnitudes: a smooth latent costs far
    less than the same symbols in random places; an all-zero one nearly nothing."""
    i = torch.arange(32.0)
    smooth = (6 * torch.sin(i / 5)[:, None] + 6 * torch.cos(i / 7)[None, :]).round().expand(1, 4, 32, 32)
    g = torch.Generator().manual_seed(0)
    shuffled = smooth.flatten()[torch.randperm(smooth.numel(), generator=g)].reshape(smooth.shape)
    assert float(rate.bits(smooth)) < 0.5 * float(rate.bits(shuffled))
    assert float(rate.bits(torch.zeros(1, 4, 32, 32))) < 0.1 * 4 * 32 * 32
    u = shuffled.clone().requires_grad_(True)
    before = rate.bits(u).sum()
    (grad,) = torch.autograd.grad(before, [u])
    assert float(rate.bits(shuffled - 0.05 * grad)) < float(before)


def test_the_rd_slope_follows_the_quantizer():
    """rd_lambda is the squared error the codec's quantizer trades per bit per pixel: one octave of step (one
    bit per latent element, C/64 bpp) moves C k^2/12 by 3/4, so the slope's finite difference matches within
    the curve's convexity."""
    for quality in (10, 50, 90):
        k = quant.noise_level(quality)
        channels = 4
        d_fine, d_coarse = channels * (k / 2) ** 2 / 12, channels * k ** 2 / 12
        secant = (d_coarse - d_fine) / (channels / 64)  # per bpp
        lam_mid = rate.rd_lambda(k / math.sqrt(2))
        assert 0.9 < secant / lam_mid < 1.2
