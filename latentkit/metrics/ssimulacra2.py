"""SSIMULACRA 2.1: the JPEG XL project's perceptual image-quality metric, as in libjxl's reference tool.

SSIMULACRA2 (Jon Sneyers, Cloudinary, 2022; weights retuned in version 2.1, April 2023) scores a distorted image
against its original on a scale that tops out at 100 (mathematically lossless) and has no lower bound:
about 90 is visually lossless, 70 high quality, 50 medium, 30 low, 10 very low, and very strong distortions go
negative. **Higher is better.** This module re-implements the reference algorithm (``ssimulacra2`` from
github.com/cloudinary/ssimulacra2, a standalone copy of libjxl's ``tools/ssimulacra2.cc``) in torch, from the
published description and source, and agrees with the reference tool to well under 0.5 points (see
``tests/data/ssimulacra2/golden.json``):

1. sRGB (8-bit levels / 255) is linearised with the sRGB transfer function.
2. Linear RGB goes to XYB: the opsin absorbance matrix (rows ``(0.30, 0.622, 0.078)``,
   ``(0.23, 0.692, 0.078)``, ``(0.24342, 0.20477, 0.55181)``) plus a bias of 0.0037930732552754493, clamped
   at 0, cube root, minus the cube root of the bias; X = (L - M) / 2, Y = (L + M) / 2, B = S. The reference
   then makes all three "more or less 0..1": X' = 14 X + 0.42, Y' = Y + 0.01, B' = (B - Y) + 0.55.
3. Six scales (1:1 to 1:32): between scales the *linear RGB* image is halved by 2 x 2 box averaging (an odd
   side replicates its last row/column, so sides become ceil(side / 2)), then converted to XYB again. A
   scale is computed only while the previous one was at least 8 x 8 px (the reference's loop condition), so a
   128 px image still gets its 4 px sixth scale, and a small image gets fewer than six.
4. Per scale and XYB channel, with a Gaussian blur G (sigma 1.5, below):
   - SSIM map without the luminance denominator (the reference's ``SSIMMap``):
     ``d = 1 - (1 - (mu1 - mu2)^2) * (2 (G(xy) - mu1 mu2) + C2) / (G(xx) - mu1^2 + G(yy) - mu2^2 + C2)``,
     C2 = 0.0009, clamped at 0;
   - edge-difference map ``e = (1 + |dist - G(dist)|) / (1 + |ref - G(ref)|) - 1``, split into the
     "ringing / artifact" part max(e, 0) (the distorted image has edges where the original is smooth) and
     the "detail loss" part max(-e, 0) (blurring: the original has edges the distorted image lacks).
   Each of these three maps is pooled with the 1-norm (mean) and the 4-norm (mean of 4th powers, 4th root).
5. The 3 channels x scales x 2 norms x 3 maps values (108 for 6 scales) are combined with the 108 published
   weights (``WEIGHTS``; taken in the reference's order, which for fewer scales simply continues the running
   index, as the reference does), then ``s = 0.9562382616834844 * sum``, the cubic
   ``2.326765642916932 s - 0.020884521182843837 s^2 + 6.248496625763138e-05 s^3``, and finally
   ``100 - 10 s^0.6276336467831387`` (100 when s <= 0).

The blur is libjxl's recursive Gaussian (Charalampidis 2016, "truncated cosines", sigma 1.5 -> N = 5).
Run on an impulse, that recursion is exactly the FIR kernel ``k(j) = sum_i beta_i cos(omega_i j)`` for
|j| <= N - 1 (9 taps; omega_i = (1, 3, 5) pi / 2N, beta_i from the paper's 3 x 3 system), applied
separably with *zero* padding outside the image and no renormalisation at the borders. This module builds that
kernel from the paper's equations and applies it as a 9-tap convolution; it is not a sampled Gaussian.

Computation is in float64 (the reference works in float32). On the golden pairs and on extra odd-sized
checks (8x8 to 257x255) the scores differ from the reference tool's by at most ~0.03 points; the residual sits
in the SSIM terms of the coarser scales and does not shrink when this module runs in float32, so it most likely
comes from rounding inside the reference's float32 recursive filter, whose poles lie on the unit circle.
A 768 x 512 image takes about 0.75 s on one CPU thread.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F

from ..errors import LatentkitError

#: smallest side accepted, as in the reference tool
MIN_SIDE = 8
NUM_SCALES = 6
#: SSIM stabiliser (XYB' values are roughly in 0..1)
C2 = 0.0009
BLUR_SIGMA = 1.5

#: opsin absorbance matrix (linear sRGB -> LMS-like mix), rows L, M, S
OPSIN_ABSORBANCE = (
    (0.30, 1.0 - 0.078 - 0.30, 0.078),
    (0.23, 1.0 - 0.078 - 0.23, 0.078),
    (0.24342268924547819, 0.20476744424496821, 1.0 - 0.24342268924547819 - 0.20476744424496821),
)
OPSIN_BIAS = 0.0037930732552754493

#: the 108 weights of SSIMULACRA 2.1, ordered channel (X, Y, B) > scale > norm (1, 4) > map (ssim, ringing, blur):
#: one line per channel and scale (X 1:1 ... X 1:32, Y 1:1, ..., B 1:32), each line holding
#: (ssim, ringing, blur) of the 1-norm, then of the 4-norm
WEIGHTS = (
    0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0,
    0.0, 0.0004371155730107379, 0.0, 1.1041726426657346, 0.00066284834129271, 0.00015231632783718752,
    0.0, 0.0016406437456599754, 0.0, 1.8422455520539298, 11.441172603757666, 0.0,
    0.0007989109436015163, 0.000176816438078653, 0.0, 1.8787594979546387, 10.94906990605142, 0.0,
    0.0007289346991508072, 0.9677937080626833, 0.0, 0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053,
    0.0004550992113792063, 0.0, 0.0, 0.0013648766163243398, 0.0, 0.0,
    0.0, 0.0, 0.0, 7.466890328078848, 0.0, 17.445833984131262,
    0.0006235601634041466, 0.0, 0.0, 6.683678146179332, 0.00037724407979611296, 1.027889937768264,
    225.20515300849274, 0.0, 0.0, 19.213238186143016, 0.0011401524586618361, 0.001237755635509985,
    176.39317598450694, 0.0, 0.0, 24.43300999870476, 0.28520802612117757, 0.0004485436923833408,
    0.0, 0.0, 0.0, 34.77906344483772, 44.835625328877896, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0008680556573291698, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0005313191874358747, 0.0, 0.00016533814161379112, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0004179171803251336, 0.0017290828234722833, 0.0,
    0.0020827005846636437, 0.0, 0.0, 8.826982764996862, 23.19243343998926, 0.0,
    95.1080498811086, 0.9863978034400682, 0.9834382792465353, 0.0012286405048278493, 171.2667255897307, 0.9807858872435379,
    0.0, 0.0, 0.0, 0.0005130064588990679, 0.0, 0.00010854057858411537,
)
assert len(WEIGHTS) == 108

#: the final remapping of the weighted error sum
SCORE_SCALE = 0.9562382616834844
SCORE_POLY = (2.326765642916932, -0.020884521182843837, 6.248496625763138e-05)
SCORE_EXPONENT = 0.6276336467831387


@cache
def recursive_gaussian_kernel(sigma: float = BLUR_SIGMA) -> tuple[float, ...]:
    """The FIR taps equivalent to libjxl's recursive Gaussian of `sigma` px (Charalampidis 2016).

    The filter approximates a Gaussian by three cosines ``cos(omega_k j)``, omega_k = k pi / (2N),
    k = 1, 3, 5, over a support of radius N = round(3.2795 sigma + 0.2546); the amplitudes beta solve the
    paper's eqs. (53)-(56). The recursion libjxl runs yields exactly ``sum_k beta_k cos(omega_k j)`` for
    |j| <= N - 1 (the taps at +-N vanish). Returns the 2N - 1 taps, centre in the middle; they sum to 1.
    """
    n = float(round(3.2795 * sigma + 0.2546))
    omega = [k * math.pi / (2.0 * n) for k in (1, 3, 5)]
    p = [1.0 / math.tan(0.5 * omega[0]), -1.0 / math.tan(0.5 * omega[1]), 1.0 / math.tan(0.5 * omega[2])]
    r = [p[0] ** 2 / math.sin(omega[0]), -p[1] ** 2 / math.sin(omega[1]), p[2] ** 2 / math.sin(omega[2])]
    rho = [math.exp(-0.5 * sigma ** 2 * w ** 2) / n for w in omega]
    d13 = p[0] * r[1] - r[0] * p[1]
    zeta15 = (p[1] * r[2] - r[1] * p[2]) / d13
    zeta35 = (p[2] * r[0] - r[2] * p[0]) / d13
    a = torch.tensor([p, r, [zeta15, zeta35, 1.0]], dtype=torch.float64)
    gamma = torch.tensor([1.0, n * n - sigma ** 2, zeta15 * rho[0] + zeta35 * rho[1] + rho[2]],
                         dtype=torch.float64)
    beta = torch.linalg.solve(a, gamma).tolist()
    radius = int(n) - 1
    return tuple(sum(b * math.cos(w * j) for b, w in zip(beta, omega)) for j in range(-radius, radius + 1))


def _blur(x: torch.Tensor) -> torch.Tensor:
    """The reference's Gaussian blur (sigma 1.5) of B x C x H x W, zero-padded, same size out."""
    taps = torch.tensor(recursive_gaussian_kernel(), dtype=x.dtype, device=x.device)
    c, pad = x.shape[1], (len(taps) - 1) // 2
    kx = taps.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    x = F.conv2d(x, kx, padding=(0, pad), groups=c)
    return F.conv2d(x, kx.transpose(2, 3), padding=(pad, 0), groups=c)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """The sRGB electro-optical transfer function: encoded values in [0, 1] -> linear light in [0, 1]."""
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_positive_xyb(rgb: torch.Tensor) -> torch.Tensor:
    """Linear sRGB (N x 3 x H x W, [0, 1]) -> the reference's rescaled XYB (X', Y', B' - Y), each roughly 0..1.

    For sRGB input the ranges are about X' 0.20..0.81, Y' 0.01..0.86, B' 0.27..0.94.
    """
    m = torch.tensor(OPSIN_ABSORBANCE, dtype=rgb.dtype, device=rgb.device)
    mixed = torch.einsum("ij,njhw->nihw", m, rgb) + OPSIN_BIAS
    lms = mixed.clamp_min(0.0).pow(1.0 / 3.0) - OPSIN_BIAS ** (1.0 / 3.0)
    x = 0.5 * (lms[:, 0] - lms[:, 1])
    y = 0.5 * (lms[:, 0] + lms[:, 1])
    b = lms[:, 2]
    return torch.stack([14.0 * x + 0.42, y + 0.01, (b - y) + 0.55], 1)


def downsample2(x: torch.Tensor) -> torch.Tensor:
    """2 x 2 box average of N x C x H x W -> ceil(H / 2) x ceil(W / 2); odd sides replicate their last line."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(x, 2)


def _norms(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """1-norm (mean) and 4-norm (4th root of the mean 4th power) of non-negative maps: N x 3 x H x W -> N x 3."""
    return d.mean((2, 3)), (d ** 4).mean((2, 3)).sqrt().sqrt()


def _scale_scores(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
    """The 18 pooled error values of one scale, N x 3 (channel) x 2 (1-, 4-norm) x 3 (ssim, ringing, blur).

    `img1` / `img2` are the reference / distorted images in positive XYB (N x 3 x H x W).
    """
    c = img1.shape[1]
    mu1, mu2, s11, s22, s12 = _blur(torch.cat([img1, img2, img1 * img1, img2 * img2, img1 * img2], 1)).split(c, 1)
    num_m = 1.0 - (mu1 - mu2) ** 2
    num_s = 2.0 * (s12 - mu1 * mu2) + C2
    denom_s = (s11 - mu1 * mu1) + (s22 - mu2 * mu2) + C2
    ssim_err = (1.0 - num_m * num_s / denom_s).clamp_min(0.0)
    edge = (1.0 + (img2 - mu2).abs()) / (1.0 + (img1 - mu1).abs()) - 1.0
    maps = (ssim_err, edge.clamp_min(0.0), (-edge).clamp_min(0.0))
    pooled = [_norms(m) for m in maps]  # per map: (1-norm, 4-norm), each N x 3
    return torch.stack([torch.stack([p[k] for p in pooled], -1) for k in range(2)], 2)


def _final_score(errors: torch.Tensor) -> torch.Tensor:
    """Weighted sum + polynomial + power remap of N x 3 x S x 2 x 3 errors -> N scores (100 = identical)."""
    n = errors.shape[0]
    flat = errors.abs().reshape(n, -1)  # channel > scale > norm > map, the reference's running order
    w = torch.tensor(WEIGHTS[: flat.shape[1]], dtype=flat.dtype, device=flat.device)
    s = SCORE_SCALE * (flat * w).sum(1)
    a1, a2, a3 = SCORE_POLY
    s = a1 * s + a2 * s * s + a3 * s * s * s
    return torch.where(s > 0, 100.0 - 10.0 * s.clamp_min(0.0) ** SCORE_EXPONENT, torch.full_like(s, 100.0))


def _check(ref: torch.Tensor, dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes and return both as float64 N x 3 x H x W, clipped to [0, 1]."""
    if not isinstance(ref, torch.Tensor) or not isinstance(dist, torch.Tensor):
        raise LatentkitError("ssimulacra2 takes two torch tensors (N x 3 x H x W or 3 x H x W, values in [0, 1])")
    if ref.shape != dist.shape:
        raise LatentkitError(f"ssimulacra2 needs images of the same size, got {tuple(ref.shape)} and "
                             f"{tuple(dist.shape)}")
    if ref.dim() == 3:
        ref, dist = ref[None], dist[None]
    if ref.dim() != 4 or ref.shape[1] != 3:
        raise LatentkitError(f"ssimulacra2 needs RGB images shaped N x 3 x H x W or 3 x H x W, got "
                             f"{tuple(ref.shape)}")
    h, w = ref.shape[-2:]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise LatentkitError(f"ssimulacra2 needs images of at least {MIN_SIDE} x {MIN_SIDE} pixels, got {w} x {h}")
    return (ref.detach().to(torch.float64).clamp(0.0, 1.0), dist.detach().to(torch.float64).clamp(0.0, 1.0))


@torch.no_grad()
def ssimulacra2(ref: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """SSIMULACRA 2.1 score of `dist` against `ref`; higher is better, 100 = identical.

    Both are float tensors N x 3 x H x W (or 3 x H x W) of sRGB values in [0, 1] (8-bit levels / 255, as
    read from a PNG; values outside [0, 1] are clipped), at least 8 x 8 px. Returns N float64 scores on the
    reference's scale (100 lossless, ~90 visually lossless, ~50 medium quality, negative for very strong
    distortion); a 3 x H x W pair gives a 1-element tensor. Not differentiable (computed without autograd).
    Raises :class:`~latentkit.errors.LatentkitError` for mismatched or too small images.
    """
    ref, dist = _check(ref, dist)
    lin1, lin2 = srgb_to_linear(ref), srgb_to_linear(dist)
    per_scale = []
    for scale in range(NUM_SCALES):
        if scale:
            if min(lin1.shape[-2:]) < MIN_SIDE:  # the reference checks the previous scale's size
                break
            lin1, lin2 = downsample2(lin1), downsample2(lin2)
        per_scale.append(_scale_scores(linear_to_positive_xyb(lin1), linear_to_positive_xyb(lin2)))
    errors = torch.stack(per_scale, 2)  # N x 3 (channel) x S x 2 (norm) x 3 (map)
    return _final_score(errors)


__all__ = ["WEIGHTS", "linear_to_positive_xyb", "recursive_gaussian_kernel", "srgb_to_linear", "ssimulacra2"]
