"""SSIM (Wang et al. 2004) and MS-SSIM (Wang et al. 2003) on batched images in [0, 1].

Both follow the standard settings: an 11 x 11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, data range
1.0, statistics from "valid" windows only (no padding, as ``skimage.metrics.structural_similarity`` crops its
borders), averaged over pixels and then over the colour channels. Inputs are N x C x H x W float tensors in
[0, 1]; each function returns N values (1.0 for identical images). Both are differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import LatentkitError

WIN_SIZE = 11
WIN_SIGMA = 1.5
K1, K2 = 0.01, 0.03
#: the scale weights of Wang et al. 2003, finest scale first
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: smallest side MS-SSIM accepts: the coarsest of 5 scales (ceil(side / 16) pixels) must still hold one window
MS_SSIM_MIN_SIDE = (WIN_SIZE - 1) * 2 ** (len(MS_WEIGHTS) - 1) + 1  # 161


def _window(channels: int, like: torch.Tensor) -> torch.Tensor:
    """The normalised 1-D Gaussian (WIN_SIZE taps), shaped for a depthwise conv over `channels` channels."""
    r = torch.arange(WIN_SIZE, dtype=like.dtype, device=like.device) - WIN_SIZE // 2
    g = torch.exp(-(r ** 2) / (2 * WIN_SIGMA ** 2))
    return (g / g.sum()).view(1, 1, 1, -1).repeat(channels, 1, 1, 1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, valid region only: N x C x H x W -> N x C x (H-10) x (W-10)."""
    w = _window(x.shape[1], x)
    x = F.conv2d(x, w, groups=x.shape[1])
    return F.conv2d(x, w.transpose(2, 3), groups=x.shape[1])


def _ssim_cs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel SSIM and contrast-structure term, both N x C."""
    if min(x.shape[-2:]) < WIN_SIZE:
        raise LatentkitError(f"SSIM needs images of at least {WIN_SIZE} x {WIN_SIZE} pixels, "
                             f"got {x.shape[-1]} x {x.shape[-2]}")
    c = x.shape[1]
    mu_x, mu_y, xx, yy, xy = _blur(torch.cat([x, y, x * x, y * y, x * y], 1)).split(c, 1)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    c1, c2 = K1 ** 2, K2 ** 2
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return (lum * cs).mean((2, 3)), cs.mean((2, 3))


def _check(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape or x.dim() != 4:
        raise LatentkitError(f"images must have the same N x C x H x W shape, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    return x.to(dtype), y.to(dtype)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM between images in [0, 1] (N x C x H x W, both sides at least 11 px); returns N values in [-1, 1].

    Matches ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=-1, data_range=1.0)`` per image.
    """
    x, y = _check(x, y)
    return _ssim_cs(x, y)[0].mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM between images in [0, 1] (N x C x H x W); returns N values in [0, 1].

    Five scales with the weights ``MS_WEIGHTS``: the contrast-structure term at the four finest scales and the
    full SSIM at the coarsest, each clamped at 0 (as pytorch-msssim does; negative values have no real
    fractional power), combined per channel as a weighted geometric product and averaged over channels.
    Between scales each image is halved with a 2 x 2 average pool; an odd side keeps its last row/column,
    averaged with itself (edge replication, as in Wang's MATLAB reference, so sides shrink to ceil(side / 2)).
    For sizes that stay even through the four poolings (multiples of 16) this equals
    ``pytorch_msssim.ms_ssim(x, y, data_range=1.0)``; for odd sizes pytorch-msssim pads with zeros instead and
    differs slightly at the borders.

    Images too small for 5 scales (shorter side below ``MS_SSIM_MIN_SIDE`` = 161 px, where the coarsest scale
    would be narrower than the 11-px window) raise :class:`LatentkitError`; there is no silent fallback to
    fewer scales, because such a value would not be comparable with standard MS-SSIM.
    """
    x, y = _check(x, y)
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise LatentkitError(f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE} px on the shorter side "
                             f"(5 scales of an {WIN_SIZE}-px window), got {x.shape[-1]} x {x.shape[-2]}")
    terms = []
    for level in range(len(MS_WEIGHTS)):
        s, cs = _ssim_cs(x, y)
        if level == len(MS_WEIGHTS) - 1:
            terms.append(s.clamp(min=0))
        else:
            terms.append(cs.clamp(min=0))
            x = F.avg_pool2d(x, 2, ceil_mode=True)
            y = F.avg_pool2d(y, 2, ceil_mode=True)
    w = torch.tensor(MS_WEIGHTS, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return torch.stack(terms).pow(w).prod(0).mean(1)
