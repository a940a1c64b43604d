"""Peak signal-to-noise ratio."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..io import Image


def to_8bit_levels(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] rounded to the 256 levels an 8-bit file holds (clamped first), still float in [0, 1]."""
    return (x.float().clamp(0, 1) * 255).round() / 255


#: PSNR works through an image in slices of about this many values, so a large image needs no full-size temporaries
SLICE_VALUES = 1 << 22


def psnr(x: torch.Tensor, y: torch.Tensor, quantize: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """PSNR in dB with peak 1.0 between images in [0, 1] (N x C x H x W); one value per image (float32).

    With ``quantize=True`` both images are first rounded to 8-bit levels (what a saved PNG holds).
    Identical images give 10*log10(1/eps) (120 dB) rather than infinity. The squared errors are summed in
    float64 over slices of rows (a 4096x4096 image would otherwise take several 201 MB temporaries).
    """
    n, c, h, w = x.shape
    step = max(1, SLICE_VALUES // max(1, n * c * w))
    sse = torch.zeros(n, dtype=torch.float64)
    for r in range(0, h, step):
        xs, ys = x[..., r:r + step, :].float(), y[..., r:r + step, :].float()
        if quantize:
            xs, ys = to_8bit_levels(xs), to_8bit_levels(ys)
        sse += (xs - ys).pow(2).flatten(1).sum(1, dtype=torch.float64)
    mse = sse / (c * h * w)
    return (10 * torch.log10(1.0 / (mse + eps))).float()


def written_psnr(src: "Image", rec: "Image") -> float:
    """PSNR in dB between the colour of two :class:`latentkit.io.Image` as they are written to a file: the gray
    channel for grayscale sources (the decoded channels' mean), quantised to 8 bits for 8-bit sources."""
    x, y = src.batch(), rec.batch()
    if src.grayscale:
        x, y = x[:, :1], y.mean(1, keepdim=True)
    return float(psnr(x, y, quantize=src.bit_depth == 8)[0])
