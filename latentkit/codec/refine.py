"""Encoder-side latent refinement: gradient steps on the latent through the codec's own quantizer and the decoder.

The encoder network predicts a latent in one pass; the latent that the decoder turns into the closest picture,
once quantized with the file's steps, is usually another one (the amortization gap of learned codecs). Each
refinement step decodes the quantized latent, measures the squared error against the image (pixels in [0, 1])
plus a rate proxy, and moves the latent by Adam, its learning rate decaying to zero along a cosine over the steps;
rounding passes gradients straight through. The file format and
the decoder do not change: a refined file is an ordinary `.latent` file whose symbols were chosen better.

The latent is optimised in units of each channel's quantization step (``u = z / step``), so one learning rate
fits every channel and quality. The rate term is the entropy coder's code length as :mod:`latentkit.codec.rate`
estimates it (prediction residuals under the coder's context model, in bits per pixel), priced at
``RATE_WEIGHT`` times the codec's rate-distortion slope at the quality (:func:`latentkit.codec.rate.rd_lambda`),
so the trade between error and bits scales with the quality. The learning-rate schedule was chosen on kodim01 and
kodim23 at qualities 30, 45 and 60: 0.2 decayed along a cosine gives +0.13 to +0.48 dB over a constant 0.1 at the
same bytes (MS-SSIM up too); 0.3 or a constant rate do worse, and 40 steps add another 0.15-0.43 dB over 20. The
rate term (session 19) replaced a mean |symbol| proxy (``k**2 / 3`` per unit): on 512x512 centre crops of four
validation photos at qualities 30-75, BD-rate of the refined curves against the old proxy's, PSNR / MS-SSIM,
weight 0.5: -4.4/-4.5%, -4.9/-0.2%, -9.6/-6.5%, -10.9/-8.0%; weight 1: -7.1/-5.6%, -3.8/+4.0%, -12.7/-6.6%,
-8.1/-6.1%; weight 2 lost MS-SSIM on one (+9.6%). Measured against the plain encoder in the README ("The
`.latent` codec"), `scripts/bench_refine.py` and `latentkit bench rd --codecs latent-refine`; it costs ~100x the
encoding time, so it is opt-in.

Deterministic on a given machine and thread count (the fast path's arithmetic and Adam's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import runtime, standalone, tiling
from ..errors import LatentkitError
from ..model import downsampling_factor
from . import quant, rate

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

#: Adam's initial learning rate, in quantization steps per refinement step (decayed to 0 along a cosine)
LEARNING_RATE = 0.2
#: weight of the estimated bits per pixel (:func:`latentkit.codec.rate.bits`) relative to the codec's own
#: rate-distortion slope (:func:`latentkit.codec.rate.rd_lambda`); chosen on validation crops (module docstring)
RATE_WEIGHT = 0.5


def refine_latent(vae: AutoencoderKL, image: torch.Tensor, latent: np.ndarray, exponents: np.ndarray, quality: int,
                  steps: int, progress: bool = False) -> np.ndarray:
    """`latent` (C x h x w float32, unscaled) refined by `steps` gradient steps so that, quantized with the steps of
    `exponents`, the decoder reproduces `image` (1 x 3 x H x W in [0, 1]) better (see the module docstring).

    Returns the iterate (the unrefined latent included) with the lowest loss, so refinement never ends worse than
    it started by its own measure: an optimiser step can overshoot where coarse steps make the rounding jump.
    Runs the decoder with gradients on the fast path's precision (bf16 autocast where native) and memory layout."""
    if steps <= 0:
        return latent
    h, w = image.shape[-2:]
    f = downsampling_factor(vae)
    if tiling.should_tile(vae, f * latent.shape[-2], f * latent.shape[-1], op="decode"):
        raise LatentkitError(f"refinement runs the decoder on the whole image with gradients, and a {w}x{h} image "
                             "is too large for that here (it decodes in tiles); encode it without refinement")
    net = standalone.view_of(vae) or vae
    p = next(vae.parameters())
    target = image.to(p.device, torch.float32)
    step = torch.from_numpy(quant.step_sizes(exponents)).to(p.device)[None, :, None, None]
    u = (torch.from_numpy(latent).to(p.device, torch.float32)[None] / step).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    pixels = h * w
    rate_weight = RATE_WEIGHT * rate.rd_lambda(quant.noise_level(quality)) / pixels
    dtype = runtime.fast_dtype(p.device)

    def loss_of(u: torch.Tensor) -> torch.Tensor:
        symbols = u + (torch.round(u) - u).detach()  # straight-through rounding
        z = runtime.prepare_input((symbols * step).to(p.dtype))
        with torch.autocast(p.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net.decode(z).sample
        err = ((out.float()[..., :h, :w] + 1) / 2 - target).square().mean()
        return err + rate_weight * rate.bits(symbols).sum()

    best, best_loss = u, float("inf")  # the first step's loss is the unrefined latent's
    for _ in tqdm(range(steps), desc="refine", unit="step", leave=False, disable=not progress):
        loss = loss_of(u)
        if loss.item() < best_loss:
            best, best_loss = u.detach().clone(), loss.item()
        u.grad, = torch.autograd.grad(loss, [u])
        opt.step()
        schedule.step()
    with torch.no_grad():  # the last iterate, scored without gradients
        if loss_of(u).item() < best_loss:
            best = u.detach()
    return (best.detach() * step)[0].float().cpu().numpy()


