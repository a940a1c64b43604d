"""Every metric by name, in one call: what ``latentkit metrics``, ``bench rd`` and reports measure.

Metric names are the same everywhere (CSV columns, JSON keys, BD-rate tables, plot file names): ``psnr`` (dB),
``ssim``, ``ms_ssim``, and ``lpips_<net>`` for each LPIPS backbone (``lpips_squeeze``: the default model's
training loss, so it is not an independent judge of that model).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import LatentkitError
from .lpips import NETS, lpips
from .psnr import psnr, to_8bit_levels
from .ssim import MS_SSIM_MIN_SIDE, ms_ssim, ssim

#: every metric :func:`compare` measures -> whether higher is better
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ms_ssim": True, **{f"lpips_{net}": False for net in NETS}}
#: what `latentkit metrics` reports by default, in display order
DEFAULT_METRICS = ("psnr", "ssim", "ms_ssim", "lpips_squeeze")


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """`metrics` as a list; raises :class:`LatentkitError` naming an unknown one."""
    unknown = [m for m in metrics if m not in HIGHER_IS_BETTER]
    if unknown:
        raise LatentkitError(f"unknown metric {unknown[0]!r}: use one of {', '.join(HIGHER_IS_BETTER)}")
    return list(metrics)


def compare(x: torch.Tensor, y: torch.Tensor,
            metrics: Sequence[str] = DEFAULT_METRICS) -> list[dict[str, float | None]]:
    """The named metrics between reference `x` and distorted `y`, images in [0, 1] (N x 3 x H x W, or 3 x H x W
    for one), one dict per image with the keys in `metrics` order.

    Both images are first rounded to 8-bit levels (what an 8-bit RGB file holds). ``ms_ssim`` is None when the
    shorter side is below 161 px (too small for its 5 scales).
    """
    check_metrics(metrics)
    if x.ndim == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    x, y = to_8bit_levels(x), to_8bit_levels(y)
    values: dict[str, torch.Tensor | None] = {}
    with torch.no_grad():
        for m in metrics:
            if m == "psnr":
                values[m] = psnr(x, y)
            elif m == "ssim":
                values[m] = ssim(x, y)
            elif m == "ms_ssim":
                values[m] = ms_ssim(x, y) if min(x.shape[-2:]) >= MS_SSIM_MIN_SIDE else None
            else:
                values[m] = lpips(x, y, m.removeprefix("lpips_"))
    return [{m: (None if v is None else float(v[i])) for m, v in values.items()} for i in range(x.shape[0])]
