"""Bit allocation: how much each latent channel matters to the decoder, and the step each channel gets.

A latent error of mean square ``e_c`` in channel ``c`` becomes, through the (locally linear) decoder,
``g_c * e_c`` of pixel mean squared error, where the *gain* ``g_c`` is the mean squared change of the decoded
pixels (images in [0, 1], all 3 colour channels) per unit variance of white noise added to channel ``c``.
At high rate, uniform steps ``s_c`` give ``e_c = s_c**2 / 12`` and spending bits where they buy most means
equal error from every channel, ``s_c = k / sqrt(g_c)`` (:func:`latentkit.codec.quant.step_exponents`). At low
rate that rule fails (a channel whose values mostly round to zero costs its whole variance, not ``s**2 / 12``),
so :func:`choose_exponents` searches each channel's step for the least ``g_c * e_c + lambda * r_c``, with the
exact quantization error ``e_c``, the channel's rate ``r_c`` from its symbols (bits per element, the entropy
coder's own context model estimate: :func:`latentkit.codec.entropy.channel_bits`) and
``lambda = k**2 ln 2 / 6``, the slope at which the high-rate rule is optimal (what this buys on Kodak: README,
"The `.latent` codec"). The posterior's own std is a poor guide with a weak KL term (it need not track how much
the decoder cares about a channel), which is why the gains are measured.

The gains are measured per image by finite differences on a central crop of its latent (at most
``CROP`` x ``CROP`` latent positions, so the cost is bounded whatever the image size), on the model's fast
path (bf16 where the CPU has it), with a fixed-seed perturbation of ``REL_STEP`` times each channel's std: the
same image gives the same gains on a given machine and thread count. The perturbation is large enough that bf16
rounding noise is small against it (at 5% of the std it inflated some gains 2.5x) and small enough to stay
near the linear regime (README, "The `.latent` codec"). The decoder never needs the gains: the steps they choose
travel in the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import model as lkmodel
from . import entropy, quant

if TYPE_CHECKING:  # type hints only: commands run the model without importing diffusers
    from diffusers import AutoencoderKL

#: side of the central latent crop the gains are measured on (latent positions; 16 = 128 image pixels)
CROP = 16
#: the step search spans this many exponent units (1/8 octave) either side of the high-rate rule
SEARCH = 24
#: the search measures error and rate on at most this many latent positions per side (a central crop)
SEARCH_CROP = 128
#: perturbation size, relative to each channel's standard deviation over the crop (see the module docstring)
REL_STEP = 0.2
_FLOOR = 1e-12


def decoder_gains(vae: AutoencoderKL, latent: np.ndarray) -> np.ndarray:
    """Per-channel decoder gains (float64, C) for an unscaled latent C x h x w: mean squared change of the
    decoded [0, 1] pixels per unit variance of noise added to that channel (floored at 1e-12)."""
    C, h, w = latent.shape
    y0, x0 = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
    z = torch.from_numpy(np.ascontiguousarray(latent[:, y0:y0 + CROP, x0:x0 + CROP], dtype=np.float32))
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    steps = REL_STEP * z.flatten(1).std(1, correction=0).clamp_min(1e-3)  # a 1 x 1 latent: 0, not NaN
    batch = z.repeat(C + 1, 1, 1, 1)
    for c in range(C):
        batch[c + 1, c] += steps[c] * noise[c]
    p = next(vae.parameters())
    out = lkmodel.decode(vae, batch.to(p.device), tile=False).double().cpu()
    mse = (out[1:] - out[:1]).pow(2).mean(dim=(1, 2, 3))
    return np.maximum(np.nan_to_num((mse / steps.double() ** 2).numpy(), nan=_FLOOR), _FLOOR)


def choose_exponents(latent: np.ndarray, gains: np.ndarray, quality: int) -> np.ndarray:
    """Rate-distortion optimised step exponents (int64, C) for an unscaled latent C x h x w, its decoder
    `gains` (:func:`decoder_gains`) and a quality 1..100: per channel, the exponent within ``SEARCH`` units of
    the high-rate rule that minimises ``g_c * e_c + lambda * r_c`` (see the module docstring), searched on every
    other exponent and then refined; ties go to the finer step.

    The rate estimate (an entropy-coder fit, :func:`latentkit.codec.entropy.channel_bits`) is what costs; the
    distortion term alone is a lower bound of the cost (rates are >= 0), so candidates are costed in order of
    that bound and the search stops at the first whose bound exceeds the best cost found: the same exponents
    as costing every candidate, with fewer rate estimates (coarse steps, whose error alone loses, are skipped)."""
    k = quant.noise_level(quality)
    lam = k * k * np.log(2) / 6
    start = quant.step_exponents(gains, quality)
    C, h, w = latent.shape
    y0, x0 = max(0, (h - SEARCH_CROP) // 2), max(0, (w - SEARCH_CROP) // 2)
    crop = latent[:, y0:y0 + SEARCH_CROP, x0:x0 + SEARCH_CROP].astype(np.float32)
    out = start.copy()
    for c in range(C):
        z, z64 = crop[c], crop[c].astype(np.float64)  # float32 rounds as quant.quantize does; float64 for the error
        symbols: dict[int, np.ndarray] = {}
        bounds: dict[int, float] = {}
        costs: dict[int, float] = {}

        def bound(e: int) -> float:
            if e not in bounds:
                step = quant.step_sizes(np.array([e]))[0]
                q = np.clip(np.rint(z / step), -quant.MAX_SYMBOL, quant.MAX_SYMBOL).astype(np.int64)
                symbols[e] = q
                bounds[e] = gains[c] * float(np.mean((z64 - q * np.float64(step)) ** 2))
            return bounds[e]

        def best(candidates: range) -> int:
            """The candidate of least cost (the lowest exponent among equals), costing as few as the bound allows."""
            top: tuple[float, int] | None = None
            for e in sorted(candidates, key=lambda e: (bound(e), e)):
                if top is not None and bound(e) > top[0]:
                    break
                if e not in costs:
                    q = symbols[e]
                    costs[e] = bound(e) + lam * entropy.channel_bits(q) / q.size
                top = min(top or (costs[e], e), (costs[e], e))
            return top[1]

        lo, hi = max(quant.EXP_MIN, int(start[c]) - SEARCH), min(quant.EXP_MAX, int(start[c]) + SEARCH)
        coarse = best(range(lo, hi + 1, 2))  # every other exponent, then its two neighbours
        out[c] = best(range(max(lo, coarse - 1), min(hi, coarse + 1) + 1))
    return out
