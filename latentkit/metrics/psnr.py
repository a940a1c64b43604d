"""Peak signal-to-noise ratio."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..io import Image


def to_8bit_levels(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] rounded to the 256 levels an 8-bit file holds (clamped first), still float in [0, 1]."""
    return (x.float().clamp(0, 1) * 255).round() / 255


def psnr(x: torch.Tensor, y: torch.Tensor, quantize: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """PSNR in dB with peak 1.0 between images in [0, 1] (N x C x H x W); one value per image.

    With ``quantize=True`` both images are first rounded to 8-bit levels (what a saved PNG holds).
    Identical images give 10*log10(1/eps) (120 dB) rather than infinity.
    """
    x, y = x.float(), y.float()
    if quantize:
        x, y = to_8bit_levels(x), to_8bit_levels(y)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / (mse + eps))


def written_psnr(src: "Image", rec: "Image") -> float:
    """PSNR in dB between the colour of two :class:`latentkit.io.Image` as they are written to a file: the gray
    channel for grayscale sources (the decoded channels' mean), quantised to 8 bits for 8-bit sources."""
    x, y = src.batch(), rec.batch()
    if src.grayscale:
        x, y = x[:, :1], y.mean(1, keepdim=True)
    return float(psnr(x, y, quantize=src.bit_depth == 8)[0])
