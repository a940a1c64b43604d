"""Reconstruction-error anomaly maps and scores: an autoencoder trained on normal images reconstructs them well
and whatever it never learned (noise, damage, foreign content) badly, so the error marks the anomaly.

Two metrics: ``l2``, the per-pixel squared error (mean of the three channels, images in [0, 1]; the score is
its mean, the MSE), and ``lpips``, LPIPS-squeeze's spatial map (:meth:`latentkit.metrics.lpips.LPIPS.forward`;
the score is the LPIPS distance). The threshold recipe: score a folder of normal images, take a high percentile
of their scores, call an input anomalous when its score exceeds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..errors import LatentkitError
from ..io import Image
from ..model import reconstruct
from ._images import one_image

if TYPE_CHECKING:  # type hints only: commands run the model without importing diffusers
    from diffusers import AutoencoderKL

METRICS = ("l2", "lpips")


@dataclass
class Anomaly:
    """One image's result: ``score`` (higher: more anomalous; MSE for l2, the LPIPS distance for lpips),
    ``map`` (H x W float32, >= 0, same units per pixel) and the ``reconstruction`` (3 x H x W in [0, 1])."""

    score: float
    map: torch.Tensor
    reconstruction: torch.Tensor


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise LatentkitError(f"unknown anomaly metric '{metric}': use one of {', '.join(METRICS)}")
    return metric


def anomaly(vae: AutoencoderKL, image: torch.Tensor | Image, metric: str = "l2") -> Anomaly:
    """The reconstruction-error map and score of one RGB image in [0, 1] (3 x H x W, 1 x 3 x H x W or an
    :class:`~latentkit.io.Image`); ``metric`` ``l2`` or ``lpips`` (LPIPS-squeeze: at least 17 px a side)."""
    check_metric(metric)
    x = one_image(image)
    rec = reconstruct(vae, x)
    if metric == "l2":
        emap = (x - rec).pow(2).mean(1)[0]
        return Anomaly(float(emap.double().mean()), emap, rec[0])
    from ..metrics.lpips import lpips

    emap = lpips(x, rec, spatial=True)[0, 0]
    return Anomaly(float(lpips(x, rec)[0]), emap, rec[0])


def threshold(scores: Sequence[float], percentile: float = 95.0) -> float:
    """The `percentile` (0 < P <= 100, linear interpolation) of the scores of normal images."""
    if not 0 < percentile <= 100:
        raise LatentkitError(f"--percentile must be in (0, 100], got {percentile}")
    if len(scores) == 0:
        raise LatentkitError("no scores of normal images to set a threshold from")
    return float(np.percentile(np.asarray(scores, dtype=np.float64), percentile))


def overlay(image: torch.Tensor | Image, emap: torch.Tensor, vmax: float, colormap: str = "inferno") -> torch.Tensor:
    """The error map drawn over the image: a grey copy of the image, the map's colour (matplotlib `colormap`,
    ``emap / vmax`` clipped to [0, 1]) blended on more opaquely where the error is larger. 3 x H x W in [0, 1]."""
    from matplotlib import colormaps

    x = one_image(image)[0]
    m = (emap.float() / max(float(vmax), 1e-12)).clamp(0, 1)
    heat = torch.from_numpy(colormaps[colormap](m.cpu().numpy())[..., :3].astype(np.float32)).permute(2, 0, 1)
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).expand(3, -1, -1)
    alpha = 0.25 + 0.65 * m
    return ((1 - alpha) * grey + alpha * heat).clamp(0, 1)


def shared_vmax(maps: Sequence[torch.Tensor], q: float = 0.99) -> float:
    """One colour scale for several maps: the largest of their `q` quantiles (so maps of one run compare)."""
    return max(float(torch.quantile(m.flatten().float()[:: max(1, m.numel() // 1_000_000)], q)) for m in maps)
