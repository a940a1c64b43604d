"""Latents quantized as the `.latent` codec quantizes them, for tuning a decoder to what the codec feeds it.

The codec (:mod:`latentkit.codec.quant`, :mod:`latentkit.codec.allocate`) rounds each channel ``c`` of the
posterior-mean latent to a step ``2 ** (e_c / 8)``, with ``e_c`` the high-rate rule ``8 * log2(k / sqrt(g_c))``
(``k`` from the quality, ``g_c`` the decoder's gain for the channel) moved by the RD search. Training draws, per
crop, a quality uniformly from a range (or, with probability ``clean``, no quantization, so the decoder keeps its
high-rate quality), takes the rule's exponents for fixed model gains and adds an integer offset per channel
(normal, std ``JITTER``, clipped to the search window): on training photos the search's offsets from the rule
with model-mean gains are mostly within +-5 units and at most +-17 at the lowest qualities, and per-image gains
vary by up to 2.6 octaves, so the jitter covers the steps real files carry. Rounding is the codec's:
``round(z / step) * step`` in float32. With a frozen encoder (the latents need no gradient) the decoder gets
exactly those values; when the encoder trains too, gradients pass straight through the rounding to it (the
straight-through estimator), so the encoder learns latents that survive the codec's quantization; with a rate
weight (:func:`rate_loss`) it also learns latents the entropy coder spends fewer bits on, priced at the codec's
own rate-distortion slope.
"""

from __future__ import annotations

import numpy as np
import torch

from ..codec import allocate, quant, rate

#: std of the per-channel exponent offset, in 1/8 octaves
JITTER = 5.0


def parse_qualities(text: str) -> tuple[int, int]:
    """``"1-80"`` -> (1, 80): an inclusive range of codec qualities (1..100)."""
    try:
        lo, hi = (int(t) for t in text.split("-"))
    except ValueError:
        raise ValueError(f"codec qualities must look like 1-80, got {text!r}") from None
    quant.check_quality(lo)
    quant.check_quality(hi)
    if lo > hi:
        raise ValueError(f"codec qualities {text!r}: the first must not exceed the second")
    return lo, hi


def model_gains(vae, images: list[torch.Tensor]) -> np.ndarray:
    """Geometric mean over `images` (each 3 x H x W in [0, 1]) of the decoder gains the codec measures."""
    from .. import model as lkmodel

    logs = []
    with torch.no_grad():
        for im in images:
            z = lkmodel.encode(vae, im[None], fast=False, tile=False)[0].float().cpu().numpy()
            logs.append(np.log(allocate.decoder_gains(vae, z)))
    return np.exp(np.mean(logs, axis=0))


class CodecQuantizer:
    """``q(z)``: a batch of unscaled latents N x C x h x w, each sample quantized at its own random quality."""

    def __init__(self, gains: np.ndarray, qualities: tuple[int, int], clean: float = 0.1):
        self.gains, self.qualities, self.clean = np.asarray(gains, dtype=np.float64), qualities, clean

    def draw(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N x C float32 steps, N noise levels ``k`` of the drawn qualities): an ``inf`` row of steps and ``k`` 0
        where that sample stays unquantized."""
        lo, hi = self.qualities
        q = torch.randint(lo, hi + 1, (n,), generator=generator)
        clean = torch.rand(n, generator=generator) < self.clean
        jitter = (torch.randn(n, len(self.gains), generator=generator) * JITTER).round()
        jitter = jitter.clamp(-allocate.SEARCH, allocate.SEARCH).long().numpy()
        rows, levels = [], []
        for i in range(n):
            if clean[i]:
                rows.append(np.full(len(self.gains), np.inf, dtype=np.float32))
                levels.append(0.0)
                continue
            e = np.clip(quant.step_exponents(self.gains, int(q[i])) + jitter[i], quant.EXP_MIN, quant.EXP_MAX)
            rows.append(quant.step_sizes(e))
            levels.append(quant.noise_level(int(q[i])))
        return torch.from_numpy(np.stack(rows)), torch.tensor(levels, dtype=torch.float64)

    def steps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """N x C float32 steps (``inf`` rows: that sample stays unquantized)."""
        return self.draw(n, generator)[0]

    @staticmethod
    def quantize(z: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``z`` (N x C x h x w) rounded to N x C `steps` as the codec rounds (``inf``: unchanged); gradients
        pass straight through when ``z`` needs them."""
        steps = steps.to(z.device)[:, :, None, None]
        zf = z.detach().float()
        q = torch.where(torch.isinf(steps), zf, torch.round(zf / steps) * steps).to(z.dtype)
        return z + (q - z).detach() if z.requires_grad else q

    def __call__(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.quantize(z, self.steps(z.shape[0], generator))


def rate_loss(zq: torch.Tensor, steps: torch.Tensor, levels: torch.Tensor, pixels: int) -> torch.Tensor:
    """What the bits of quantized latents ``zq`` (N x C x h x w, from :meth:`CodecQuantizer.quantize` with `steps`
    and noise levels `levels` of :meth:`CodecQuantizer.draw`) are worth in the pixel loss, batch mean: per
    sample the estimated bits per pixel (:func:`latentkit.codec.rate.bits` over `pixels` image pixels) times the
    codec's rate-distortion slope at its quality (:func:`latentkit.codec.rate.rd_lambda`), times 4 for the
    squared error of [-1, 1] images (the training's ``--rec-loss l2`` units); 0 for unquantized samples."""
    coded = torch.isfinite(steps[:, 0])
    if not bool(coded.any()):
        return zq.new_zeros((), dtype=torch.float32)
    u = zq[coded.to(zq.device)].float() / steps[coded].to(zq.device)[:, :, None, None]
    lam = torch.tensor([rate.rd_lambda(float(k)) for k in levels[coded]], device=zq.device)
    return 4 * (lam * rate.bits(u)).sum() / (pixels * zq.shape[0])
