"""How much each latent channel matters to the decoder: the per-channel gains that set the quantization steps.

Uniform quantization with step ``s_c`` adds noise of variance ``s_c**2 / 12`` to every element of channel
``c``; through the (locally linear) decoder that becomes ``g_c * s_c**2 / 12`` of pixel mean squared error,
where the *gain* ``g_c`` is the mean squared change of the decoded pixels (images in [0, 1], all 3 colour
channels) per unit variance of white noise added to channel ``c``. Spending bits where they buy most
(reverse water-filling at high rate) means equal error from every channel: ``s_c = k / sqrt(g_c)``, which
:func:`latentkit.codec.quant.step_exponents` implements. The posterior's own std is a poor guide with a weak
KL term: on the default model it differs 50x between channels while the gains differ 20x the other way.

The gains are measured per image by finite differences on a central crop of its latent (at most
``CROP`` x ``CROP`` latent positions, so the cost is bounded whatever the image size: about a fifth of a
768x512 decode), in fp32, with a fixed-seed perturbation: the same image gives the same gains on a given
machine. The decoder never needs them: the steps they choose travel in the file.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL

from .. import model as lkmodel

#: side of the central latent crop the gains are measured on (latent positions; 16 = 128 image pixels)
CROP = 16
#: perturbation size, relative to each channel's standard deviation over the crop (small: linear regime)
REL_STEP = 0.05
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
    out = lkmodel.decode(vae, batch.to(p.device), fast=False, tile=False).double().cpu()
    mse = (out[1:] - out[:1]).pow(2).mean(dim=(1, 2, 3))
    return np.maximum(np.nan_to_num((mse / steps.double() ** 2).numpy(), nan=_FLOOR), _FLOOR)
