"""Interpolation between two images in latent space (linear and spherical), decoded frame by frame.

Latents are the unscaled posterior means (:func:`latentkit.model.encode`). ``slerp`` moves along the great circle
between the two latents' directions (each flattened to one vector, about the prior's centre 0) while the norm
goes linearly from ``|a|`` to ``|b|``: points keep the norm of the endpoints, where a straight line cuts inside
the shell on which Gaussian draws of high dimension lie (White, "Sampling generative networks", 2016).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import LatentkitError
from ..io import Image
from ..model import decode, downsampling_factor, encode
from ..model import centre_crop
from ._images import one_image

if TYPE_CHECKING:  # type hints only: commands run the model without importing diffusers
    from diffusers import AutoencoderKL

#: below this angle (radians) between the two latents slerp is taken as lerp (sin(theta) ~ 0)
_PARALLEL = 1e-4


def check_steps(steps: int) -> int:
    """The number of frames, both endpoints included: an integer >= 2."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise LatentkitError(f"--steps must be an integer of at least 2 (the frames, both endpoints included), "
                             f"got {steps!r}")
    return steps


def fractions(steps: int) -> torch.Tensor:
    """``steps`` evenly spaced t in [0, 1], float64, exactly 0 first and 1 last."""
    return torch.linspace(0.0, 1.0, check_steps(steps), dtype=torch.float64)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """``(1 - t) a + t b``; exactly `a` at t = 0 and `b` at t = 1."""
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two tensors of the same shape, each taken as one vector: the direction turns
    along the great circle from a's to b's, the norm goes linearly from ``|a|`` to ``|b|`` (so with equal norms
    every point has that norm). Exactly `a` at t = 0 and `b` at t = 1; nearly parallel vectors (and a zero
    vector) fall back to :func:`lerp`."""
    if t in (0, 1):
        return lerp(a, b, t)
    a64, b64 = a.double().flatten(), b.double().flatten()
    na, nb = a64.norm(), b64.norm()
    if na == 0 or nb == 0:
        return lerp(a, b, t)
    ua, ub = a64 / na, b64 / nb
    theta = torch.arccos((ua @ ub).clamp(-1.0, 1.0))
    if theta < _PARALLEL or torch.pi - theta < _PARALLEL:  # antiparallel: no unique great circle either
        return lerp(a, b, t)
    direction = (torch.sin((1 - t) * theta) * ua + torch.sin(t * theta) * ub) / torch.sin(theta)
    return (((1 - t) * na + t * nb) * direction).reshape(a.shape).to(a.dtype)


_MIX = {False: lerp, True: slerp}  # by the flag of the same name, which shadows the function below


def interpolate_latents(za: torch.Tensor, zb: torch.Tensor, steps: int, slerp: bool = False) -> torch.Tensor:
    """``steps`` latents from `za` to `zb` (same shape C x h x w or 1 x C x h x w), stacked: steps x C x h x w."""
    if za.shape != zb.shape:
        raise LatentkitError(f"latents of different shapes {tuple(za.shape)} and {tuple(zb.shape)}")
    mix = _MIX[bool(slerp)]
    za, zb = za.reshape(-1, *za.shape[-3:])[0], zb.reshape(-1, *zb.shape[-3:])[0]
    return torch.stack([mix(za, zb, float(t)) for t in fractions(steps)])


def common_size(a: torch.Tensor | Image, b: torch.Tensor | Image) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images as 1 x 3 x H x W batches centre-cropped to the smaller height and the smaller width."""
    xa, xb = one_image(a), one_image(b)
    h, w = min(xa.shape[-2], xb.shape[-2]), min(xa.shape[-1], xb.shape[-1])
    return centre_crop(xa, h, w), centre_crop(xb, h, w)


def interpolate(vae: AutoencoderKL, a: torch.Tensor | Image, b: torch.Tensor | Image, steps: int = 8,
                slerp: bool = False) -> torch.Tensor:
    """Decode ``steps`` points between the latents of images `a` and `b` (both endpoints included).

    Args:
        a, b: images in [0, 1] (:class:`~latentkit.io.Image`, 3 x H x W or 1 x 3 x H x W); of different sizes
            both are centre-cropped to the smaller height and width.
        steps: frames, >= 2; frame 0 is the reconstruction of `a` and frame ``steps - 1`` that of `b`
            (:func:`latentkit.model.reconstruct` of the cropped images: the same bits).
        slerp: spherical instead of linear interpolation (:func:`slerp`).

    Returns:
        steps x 3 x H x W images in [0, 1] (float32).
    """
    check_steps(steps)
    xa, xb = common_size(a, b)
    h, w = xa.shape[-2:]
    f = downsampling_factor(vae)
    if min(h, w) < f:
        raise LatentkitError(f"images of {w}x{h} px (after cropping to a common size) are smaller than one latent "
                             f"position ({f}x{f} px)")
    za, zb = encode(vae, xa), encode(vae, xb)  # one at a time: each endpoint is exactly its reconstruction
    frames = [decode(vae, z[None])[0, :, :h, :w] for z in interpolate_latents(za, zb, steps, slerp)]
    return torch.stack(frames)
