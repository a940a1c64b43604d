"""Step allocation: decoder gains per latent channel, and steps that make every channel add equal error."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from latentkit.codec import quant
from latentkit.codec.allocate import choose_exponents, decoder_gains
from latentkit.model import decode, encode


@pytest.fixture(scope="module")
def latent(micro_vae):
    g = torch.Generator().manual_seed(3)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=g), size=(96, 128), mode="bicubic")
    return encode(micro_vae, x.clamp(0, 1), fast=False)[0].numpy()


def test_ignored_channel_costs_no_bits(micro_vae, latent):
    vae = copy.deepcopy(micro_vae)
    with torch.no_grad():
        vae.post_quant_conv.weight[:, 2] = 0  # the decoder no longer sees channel 2
    gains = decoder_gains(vae, latent)
    assert gains[2] == pytest.approx(1e-12) and np.all(gains[[0, 1, 3]] > 1e-9)
    for q in (1, 50, 100):
        exps = quant.step_exponents(gains, q)
        symbols = quant.quantize(latent, exps)
        assert not symbols[2].any() and symbols[[0, 1, 3]].any()  # all zeros there, detail elsewhere


def test_gains_follow_the_decoder_not_the_latent_units(micro_vae, latent):
    # doubling the decoder's weights on channel 1 while halving channel 1 of the latent decodes the same image;
    # the gain must quadruple and the step halve (8 exponent units), i.e. the same step in the old units
    vae = copy.deepcopy(micro_vae)
    with torch.no_grad():
        vae.post_quant_conv.weight[:, 1] *= 2
    halved = latent.copy()
    halved[1] /= 2
    g_a, g_b = decoder_gains(micro_vae, latent), decoder_gains(vae, halved)
    assert g_b[1] == pytest.approx(4 * g_a[1], rel=1e-3)
    assert np.allclose(g_b[[0, 2, 3]], g_a[[0, 2, 3]], rtol=1e-3)
    ea, eb = quant.step_exponents(g_a, 40), quant.step_exponents(g_b, 40)
    assert eb[1] == ea[1] - quant.STEPS_PER_OCTAVE and np.array_equal(eb[[0, 2, 3]], ea[[0, 2, 3]])


def test_every_channel_adds_about_the_same_error(micro_vae, latent):
    gains = decoder_gains(micro_vae, latent)
    q = 80
    exps = quant.step_exponents(gains, q)
    z = torch.from_numpy(latent)[None]
    base = decode(micro_vae, z, fast=False)
    added = []
    for c in range(latent.shape[0]):
        zq = latent.copy()
        zq[c] = quant.dequantize(quant.quantize(latent, exps), exps)[c]
        added.append(float((decode(micro_vae, torch.from_numpy(zq)[None], fast=False) - base).pow(2).mean()))
    predicted = quant.noise_level(q) ** 2 / 12  # per channel, to first order
    assert max(added) / min(added) < 2.5
    assert 0.3 < np.mean(added) / predicted < 3


def test_quality_scale_halves_the_steps_every_16_points():
    gains = np.array([1e-4, 1e-3, 1e-2, 1e-1])
    assert np.array_equal(quant.step_exponents(gains, 20) - quant.step_exponents(gains, 36), [8] * 4)
    assert np.all(np.diff(quant.step_exponents(gains, 50)) < 0)  # more sensitive channel, finer step


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (9, 17)])
def test_tiny_images_get_finite_steps_and_round_trip(micro_vae, size):
    from latentkit.codec import compress, decompress
    from latentkit.io import Image

    image = Image(torch.rand(3, *size, generator=torch.Generator().manual_seed(0)))
    z = encode(micro_vae, image.batch(), fast=False)[0].numpy()
    gains = decoder_gains(micro_vae, z)
    assert np.all(np.isfinite(gains)) and np.all(gains > 0)
    assert decompress(compress(image, micro_vae, quality=50), micro_vae).rgb.shape == (3, *size)


def test_rd_search_keeps_the_high_rate_rule_at_high_rate_and_coarsens_monotonically(micro_vae, latent):
    gains = decoder_gains(micro_vae, latent)
    assert np.abs(choose_exponents(latent, gains, 100) - quant.step_exponents(gains, 100)).max() <= 3
    exps = np.stack([choose_exponents(latent, gains, q) for q in (1, 20, 40, 60, 80, 100)])
    assert np.all(np.diff(exps, axis=0) <= 0)  # higher quality: no channel gets a coarser step


def test_rd_search_zeroes_a_channel_not_worth_its_bits():
    # channel 1 is white noise (costly to code) that the decoder barely sees: at low quality the search must
    # drop it (all symbols zero) although the high-rate rule would still code it
    rng = np.random.default_rng(0)
    z = np.stack([np.cumsum(rng.normal(size=(32, 48)), 1) * 0.3, rng.normal(0, 4, size=(32, 48))]).astype(np.float32)
    gains = np.array([1e-3, 3e-4])
    q = 12
    assert quant.quantize(z, quant.step_exponents(gains, q))[1].any()
    assert not quant.quantize(z, choose_exponents(z, gains, q))[1].any()


def test_rd_search_costs_fewer_candidates_and_picks_what_costing_all_picks(monkeypatch):
    """The bound-ordered search (distortion alone bounds the cost from below) against the plain search that costs
    every candidate, as choose_exponents did before: same exponents, fewer rate estimates."""
    from latentkit.codec import allocate, entropy

    rng = np.random.default_rng(1)
    z = np.stack([np.cumsum(rng.normal(size=(40, 56)), 1) * 0.3, rng.laplace(0, 2, size=(40, 56)),
                  rng.normal(0, 0.5, size=(40, 56)), np.cumsum(rng.normal(size=(40, 56)), 0)]).astype(np.float32)
    gains = np.array([1e-3, 3e-4, 2e-3, 5e-4])
    calls = []
    real_bits = entropy.channel_bits
    monkeypatch.setattr(entropy, "channel_bits", lambda q, *a: calls.append(1) or real_bits(q, *a))

    def costing_all(quality: int) -> np.ndarray:
        lam = quant.noise_level(quality) ** 2 * np.log(2) / 6
        start = quant.step_exponents(gains, quality)
        out = start.copy()
        for c in range(len(gains)):
            def cost(e: int) -> float:
                step = quant.step_sizes(np.array([e]))[0]
                q = np.clip(np.rint(z[c] / step), -quant.MAX_SYMBOL, quant.MAX_SYMBOL).astype(np.int64)
                err = float(np.mean((z[c].astype(np.float64) - q * np.float64(step)) ** 2))
                return gains[c] * err + lam * real_bits(q) / q.size

            lo = max(quant.EXP_MIN, int(start[c]) - allocate.SEARCH)
            hi = min(quant.EXP_MAX, int(start[c]) + allocate.SEARCH)
            coarse = min(range(lo, hi + 1, 2), key=cost)
            out[c] = min(range(max(lo, coarse - 1), min(hi, coarse + 1) + 1), key=cost)
        return out

    for quality in (1, 15, 50, 90):
        calls.clear()
        assert np.array_equal(choose_exponents(z, gains, quality), costing_all(quality))
        assert len(calls) < 4 * 27  # costing all: 25 coarse + 2 refining candidates per channel
