"""Every metric by name, in one call: what ``latentkit metrics``, ``bench rd`` and reports measure.

Metric names are the same everywhere (CSV columns, JSON keys, BD-rate tables, plot file names): ``psnr`` (dB),
``ssim``, ``ms_ssim``, ``ssimulacra2`` (0..100), ``butteraugli_max`` / ``butteraugli_3norm`` (libjxl's tool, when
installed), and ``lpips_<net>`` for each LPIPS backbone (``lpips_squeeze``: the default model's training loss, so
it is not an independent judge of that model: :data:`TRAINED_ON`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import LatentkitError
from .lpips import NETS, lpips
from .psnr import psnr, to_8bit_levels
from .ssim import MS_SSIM_MIN_SIDE, ms_ssim, ssim
from .ssimulacra2 import ssimulacra2

#: every metric :func:`compare` measures -> whether higher is better
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ms_ssim": True, "ssimulacra2": True, "butteraugli_max": False,
                    "butteraugli_3norm": False, **{f"lpips_{net}": False for net in NETS}}
#: what `latentkit metrics` reports by default, in display order
DEFAULT_METRICS = ("psnr", "ssim", "ms_ssim", "ssimulacra2", "lpips_squeeze")
#: short column headers of tables (``lpips_<net>`` reads LPIPS-<net>)
LABELS = {"psnr": "PSNR dB", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "ssimulacra2": "SSIMU2",
          "butteraugli_max": "Butt-max", "butteraugli_3norm": "Butt-3n"}
#: the metric the shipped default model is trained with (a perceptual loss term): no independent evidence for it
TRAINED_ON = ("lpips_squeeze",)


def label(metric: str) -> str:
    """A metric's short column header: ``psnr`` -> ``PSNR dB``, ``lpips_squeeze`` -> ``LPIPS-squeeze``."""
    return LABELS.get(metric) or "LPIPS-" + metric.removeprefix("lpips_")


def format_value(value: float | None, metric: str, sign: str = "") -> str:
    """A metric's value as every table prints it: 2 decimals for the dB, 0..100 and Butteraugli scales, 4 for the
    0..1 ones (SSIM, MS-SSIM, LPIPS); ``n/a`` for None or NaN; `sign` ``"+"`` prints the sign (differences)."""
    if value is None or value != value:
        return "n/a"
    digits = 2 if metric in ("psnr", "ssimulacra2") or metric.startswith("butteraugli") else 4
    return format(float(value), f"{sign}.{digits}f")


def reported_metrics(lpips_net: str = "squeeze", butteraugli: bool = False) -> list[str]:
    """What the reports (``latentkit metrics``, ``eval-model``) measure, in display order: PSNR, SSIM, MS-SSIM,
    SSIMULACRA2, with `butteraugli` Butteraugli max and 3-norm, then LPIPS with `lpips_net`."""
    return ["psnr", "ssim", "ms_ssim", "ssimulacra2", *(("butteraugli_max", "butteraugli_3norm") if butteraugli
                                                         else ()), f"lpips_{lpips_net}"]


def mean_of(rows: Sequence[dict], metrics: Sequence[str]) -> dict[str, float | None]:
    """The mean of each metric over `rows` (dicts with a value or None per metric); None where any row has None
    (e.g. MS-SSIM of an image too small for it)."""
    return {k: (None if any(r[k] is None for r in rows) else sum(r[k] for r in rows) / len(rows)) for k in metrics}


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
    if any(m.startswith("butteraugli_") for m in metrics):
        from .butteraugli import butteraugli

        runs = [butteraugli(x[i], y[i]) for i in range(x.shape[0])]
        values["butteraugli_max"] = torch.tensor([r["max"] for r in runs])
        values["butteraugli_3norm"] = torch.tensor([r["pnorm3"] for r in runs])
    with torch.no_grad():
        for m in metrics:
            if m.startswith("butteraugli_"):
                continue
            if m == "psnr":
                values[m] = psnr(x, y)
            elif m == "ssim":
                values[m] = ssim(x, y)
            elif m == "ms_ssim":
                values[m] = ms_ssim(x, y) if min(x.shape[-2:]) >= MS_SSIM_MIN_SIDE else None
            elif m == "ssimulacra2":
                values[m] = ssimulacra2(x, y)
            else:
                values[m] = lpips(x, y, m.removeprefix("lpips_"))
    return [{m: (None if values[m] is None else float(values[m][i])) for m in metrics} for i in range(x.shape[0])]
