"""A differentiable estimate of what the entropy coder spends on quantized latents, for training and refinement.

The coder (:mod:`latentkit.codec.entropy`) predicts each symbol from causal neighbours and codes the residual
with a discretized Laplace whose scale follows the causal activity of the neighbours' prediction errors. This
module mirrors that in float arithmetic on symbols ``u`` (latent / step, N x C x h x w; rounded or not):

- prediction ``mu``: the coder's default weights (:data:`~latentkit.codec.entropy.context.DEFAULT_WEIGHTS`) over
  the same neighbours, the MED predictor and the previous channel included, reading zeros outside the plane;
- scale ``b = max(SCALE_GAIN * a / 10, MIN_SCALE)`` from the activity ``a``, the coder's weighted sum of the
  neighbours' absolute residuals (weights summing to 10, so ``a / 10`` is their weighted mean);
- bits of each residual ``r = u - mu``: ``-log2 P(|R - r| < 1/2)`` for ``R`` Laplace(0, b).

The scale is held constant in the gradient (as the coder fixes it from decoded neighbours), so the gradient of
the estimate is a weighted L1 pull of each residual towards its prediction: cheap, stable, and it prices what the
coder prices (prediction errors, not symbol magnitudes). :data:`SCALE_GAIN` and :data:`MIN_SCALE` were fitted
against real payloads of the default model's latents on the 9 validation photos at qualities 1-90 (of a grid
0.6-1.4 by 0.02-0.3, 1.0 and 0.05 fit best); :data:`CODER_RATIO` scales the estimate to what the coder spends.
Tests check the estimate against real payloads of real images.
:func:`rd_lambda` converts bits to squared error at the codec's own rate-distortion slope.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .entropy.context import ACTIVITY_WEIGHTS, DEFAULT_WEIGHTS, NEIGHBOURS, WEIGHT_SHIFT

#: the Laplace scale per unit of mean neighbour residual
SCALE_GAIN = 1.0
#: the smallest scale (symbols): the coder's tables stop near 2 ** -5
MIN_SCALE = 0.05
#: what the coder spends per bit of this estimate: its per-image weight fits and context-model choice save
#: ~8% over the default weights and one fixed scale rule (median over val latents at qualities 1-90; 10th-90th
#: percentile 0.83-0.96)
CODER_RATIO = 0.92
#: the least probability a residual is given (bits are at most -log2 of it)
_MIN_PROB = 2.0 ** -24


#: where each causal neighbour the coder reads lies: (rows up, columns left; negative: right)
_OFFSETS = {"left": (0, 1), "up": (1, 0), "upleft": (1, 1), "upright": (1, -1), "left2": (0, 2), "up2": (2, 0),
            "up2right": (2, -1), "up2left": (2, 1), "upleft2": (1, 2)}
#: the terms of the coder's activity, in :data:`~latentkit.codec.entropy.context.ACTIVITY_WEIGHTS` order
_ACTIVITY_TERMS = ("left", "up", "upleft", "upright", "left2", "up2", "prev")


def _causal(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The neighbour ``dy`` rows up and ``dx`` columns left (negative: right) of every position; 0 outside."""
    h, w = x.shape[-2:]
    p = F.pad(x, (max(dx, 0), max(-dx, 0), dy, 0))
    return p[..., :h, max(-dx, 0):max(-dx, 0) + w]


def _neighbours(x: torch.Tensor, names: tuple[str, ...]) -> list[torch.Tensor]:
    """The named neighbours of every position of ``x`` (N x C x h x w), zeros outside the plane: those of
    :data:`_OFFSETS`, ``prev`` (channel ``c - 1`` at the same place; zeros for the first channel) and ``med`` (the
    median of left, up and left + up - upleft)."""
    need = set(names) | ({"left", "up", "upleft"} if "med" in names else set())
    shifted = {n: _causal(x, *_OFFSETS[n]) for n in need & _OFFSETS.keys()}
    if "prev" in names:
        shifted["prev"] = F.pad(x, (0, 0, 0, 0, 1, 0))[:, :-1]
    if "med" in names:
        left, up = shifted["left"], shifted["up"]
        shifted["med"] = torch.maximum(torch.minimum(left, up),
                                       torch.minimum(torch.maximum(left, up), left + up - shifted["upleft"]))
    return [shifted[n] for n in names]


def residuals(u: torch.Tensor) -> torch.Tensor:
    """``u - mu``: each symbol (N x C x h x w) minus the coder's default linear prediction from its causal
    neighbours (in symbols, not rounded)."""
    names = tuple(n for n, wt in zip(NEIGHBOURS, DEFAULT_WEIGHTS) if wt)
    weights = [wt for wt in DEFAULT_WEIGHTS if wt]
    mu = sum(wt * t for wt, t in zip(weights, _neighbours(u, names))) / (1 << WEIGHT_SHIFT)
    return u - mu


def _activity(err: torch.Tensor) -> torch.Tensor:
    """The coder's causal activity of absolute residuals ``err``: :data:`_ACTIVITY_TERMS` weighted by
    ``ACTIVITY_WEIGHTS``."""
    return sum(int(wt) * t for wt, t in zip(ACTIVITY_WEIGHTS, _neighbours(err, _ACTIVITY_TERMS)))


def laplace_bits(r: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``-log2 P(|R - r| < 1/2)`` for ``R`` ~ Laplace(0, b), elementwise (bits; r in symbols, b > 0)."""
    m = r.abs()
    outer = math.log(0.5) - (m - 0.5) / b + torch.log1p(-torch.exp(-1 / b))  # |r| >= 1/2
    inner_p = 1 - 0.5 * (torch.exp((m.clamp(max=0.5) - 0.5) / b) + torch.exp((-m - 0.5) / b))  # |r| < 1/2
    ln_p = torch.where(m >= 0.5, outer, torch.log(inner_p.clamp(min=_MIN_PROB)))
    return -ln_p.clamp(min=math.log(_MIN_PROB)) / math.log(2)


def bits(u: torch.Tensor) -> torch.Tensor:
    """Estimated code length in bits of each sample's symbols ``u`` (N x C x h x w float, rounded or not):
    a tensor of N, differentiable in ``u``."""
    r = residuals(u.float())
    scale = (SCALE_GAIN * _activity(r.detach().abs()) / float(ACTIVITY_WEIGHTS.sum())).clamp(min=MIN_SCALE)
    return CODER_RATIO * laplace_bits(r, scale).flatten(1).sum(1)


def rd_lambda(k: float) -> float:
    """The slope of the codec's rate-distortion curve at noise level ``k`` (:func:`latentkit.codec.quant.noise_level`):
    mean squared error of the [0, 1] image per bit per pixel, ``128 ln 2 / 12 * k**2``.

    The quantization adds ``C k**2 / 12`` to the mean squared error per pixel (:mod:`latentkit.codec.quant`) and
    halving the steps costs one bit per latent element, ``C / 64`` bits per pixel at 8x downsampling, while it
    quarters that error: ``-dD/dR = 2 ln 2 * (C k**2 / 12) / (C / 64)``. A latent change that saves ``dR`` bits
    per pixel is worth making when it costs less than ``rd_lambda(k) * dR`` of squared error."""
    return 128 * math.log(2) / 12 * k * k
