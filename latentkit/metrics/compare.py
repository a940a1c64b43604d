"""All metrics at once, as plain numbers: what ``latentkit metrics`` and reports print."""

from __future__ import annotations

import torch

from .lpips import lpips
from .psnr import psnr, to_8bit_levels
from .ssim import MS_SSIM_MIN_SIDE, ms_ssim, ssim

#: the keys of each result, in display order
FIELDS = ("psnr", "ssim", "ms_ssim", "lpips")


def compare(x: torch.Tensor, y: torch.Tensor, lpips_net: str = "squeeze") -> list[dict[str, float | None]]:
    """PSNR (dB), SSIM, MS-SSIM and LPIPS between images in [0, 1] (N x 3 x H x W), one dict per image.

    Both images are first rounded to 8-bit levels (what an 8-bit RGB file holds). ``ms_ssim`` is None when the
    shorter side is below 161 px (too small for its 5 scales).
    """
    x, y = to_8bit_levels(x), to_8bit_levels(y)
    with torch.no_grad():
        values = {"psnr": psnr(x, y), "ssim": ssim(x, y), "lpips": lpips(x, y, lpips_net)}
        if min(x.shape[-2:]) >= MS_SSIM_MIN_SIDE:
            values["ms_ssim"] = ms_ssim(x, y)
    return [{k: (float(values[k][i]) if k in values else None) for k in FIELDS} for i in range(x.shape[0])]
