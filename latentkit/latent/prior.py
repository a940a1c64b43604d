"""Draws from the VAE's prior N(0, I) in the unscaled latent space, decoded: what the KL term buys.

A VAE's KL term pulls every posterior towards N(0, I); only when it is strong enough does the *aggregate*
posterior (all images' latents together) come close to the prior, so that a draw from N(0, I) decodes to
something image-like. SD-style VAEs (and latentkit's default, KL weight 1e-6 per latent element) use a very weak
KL term: their latents have channel means far from 0, standard deviations of 1-3 and spatial structure, and
posteriors a few thousandths wide. A draw from N(0, I) is then white noise the decoder never saw, and decodes to
texture (coloured speckle and blotches), not to scenes. Such a VAE is a compressor for a diffusion model to
sample in; generating is the diffusion model's job (``latentkit latent-stats`` measures the gap).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..errors import LatentkitError
from ..model import decode, downsampling_factor

if TYPE_CHECKING:  # type hints only: commands run the model without importing diffusers
    from diffusers import AutoencoderKL

#: the most pixels one ``sample`` call decodes in all (n x height x width): 4096 x 4096, a 200 MB float image
MAX_PIXELS = 1 << 24
#: the most draws of one call
MAX_SAMPLES = 256


def check_request(n: int, height: int, width: int, temperature: float, factor: int = 8) -> None:
    """Raise a one-line :class:`LatentkitError` unless n, height, width and temperature make a sane request for
    a model of downsampling `factor`."""
    f = factor
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise LatentkitError(f"--n must be an integer from 1 to {MAX_SAMPLES}, got {n!r}")
    if min(height, width) < f or height % f or width % f:
        raise LatentkitError(f"--size {height}x{width}: height and width must be positive multiples of the model's "
                             f"downsampling factor {f}")
    if n * height * width > MAX_PIXELS:
        raise LatentkitError(f"--n {n} --size {height}x{width} asks for {n * height * width} pixels, more than the "
                             f"limit of {MAX_PIXELS} (4096 x 4096): ask for fewer or smaller samples")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise LatentkitError(f"--temperature must be a positive number, got {temperature!r}")


def prior_latents(vae: AutoencoderKL, n: int, height: int, width: int, temperature: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws from N(0, temperature**2 I) shaped as the latents of height x width images: n x C x h x w float32."""
    f = downsampling_factor(vae)
    check_request(n, height, width, temperature, f)
    shape = (n, vae.config.latent_channels, height // f, width // f)
    return temperature * torch.randn(shape, generator=generator, dtype=torch.float32)


def sample_prior(vae: AutoencoderKL, n: int = 16, height: int = 256, width: int = 256, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Decode n draws from the prior N(0, temperature**2 I) in the unscaled latent space.

    Args:
        n: draws, 1..:data:`MAX_SAMPLES`.
        height, width: image size in pixels, positive multiples of the downsampling factor (8);
            n x height x width at most :data:`MAX_PIXELS`.
        temperature: the prior's standard deviation (> 0; 1 is the prior itself).
        generator: seeds the draws (CPU generator).

    Returns:
        n x 3 x height x width images in [0, 1] (float32), decoded one at a time (bounded memory).
    """
    z = prior_latents(vae, n, height, width, temperature, generator)
    return torch.cat([decode(vae, zi[None]) for zi in z])
