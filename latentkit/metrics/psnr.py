"""Peak signal-to-noise ratio."""

from __future__ import annotations

import torch


def psnr(x: torch.Tensor, y: torch.Tensor, quantize: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """PSNR in dB with peak 1.0 between images in [0, 1] (N x C x H x W); one value per image.

    With ``quantize=True`` both images are first rounded to 8-bit levels (what a saved PNG holds).
    Identical images give 10*log10(1/eps) (120 dB) rather than infinity.
    """
    x, y = x.float(), y.float()
    if quantize:
        x, y = (x * 255).round() / 255, (y * 255).round() / 255
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / (mse + eps))
