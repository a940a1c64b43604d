"""Uniform scalar quantization of latents with one step per channel.

The step of channel ``c`` is ``2 ** (e_c / 8)`` with an integer exponent ``e_c`` in [-128, 127] that the
file carries (one byte per channel), so the decoder never recomputes a float the encoder chose. The encoder
picks ``e_c = round(8 * log2(k / sqrt(g_c)))`` with ``g_c`` the decoder's gain for channel ``c``
(:mod:`latentkit.codec.allocate`: every channel then adds the same pixel error) and the noise level
``k = 2 ** ((QUALITY_PIVOT - quality) / QUALITY_PER_OCTAVE)``: the quantization adds about
``C * k**2 / 12`` of mean squared error to the decoded [0, 1] image (to first order: about 53 dB PSNR at
quality 100, 16 dB at quality 1 for a 4-channel model). Quality is an integer 1..100, higher is better; every
``QUALITY_PER_OCTAVE`` points halve the steps.
"""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np

from ..errors import LatentkitError

#: steps are 2 ** (e / STEPS_PER_OCTAVE)
STEPS_PER_OCTAVE = 8
#: quality points per halving of the steps, and the quality at which k = 1
QUALITY_PER_OCTAVE = 16
QUALITY_PIVOT = -28
EXP_MIN, EXP_MAX = -128, 127
#: symbols are clipped to this magnitude (the entropy coder's range; far beyond any sane latent/step)
MAX_SYMBOL = (1 << 19) - 1


def _fractions() -> tuple[float, ...]:
    # 2 ** (j / 8) via Decimal's correctly rounded exp/ln, then one correctly rounded conversion to float:
    # the same bits on every machine (unlike libm pow).
    getcontext().prec = 40
    ln2 = Decimal(2).ln()
    return tuple(float((ln2 * j / STEPS_PER_OCTAVE).exp()) for j in range(STEPS_PER_OCTAVE))


_FRACTIONS = _fractions()


def step_sizes(exponents: np.ndarray) -> np.ndarray:
    """Float32 steps ``2 ** (e / 8)`` for integer exponents (exact powers of two times a frozen fraction)."""
    return np.array([math.ldexp(_FRACTIONS[int(e) % STEPS_PER_OCTAVE], int(e) // STEPS_PER_OCTAVE)
                     for e in exponents], dtype=np.float32)


def check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise LatentkitError(f"quality must be an integer from 1 to 100 (higher is better), got {quality!r}")
    return int(quality)


def check_bpp(bpp: float) -> float:
    """A target rate in bits per pixel: a finite positive number."""
    if isinstance(bpp, bool) or not isinstance(bpp, (int, float)) or not (math.isfinite(bpp) and bpp > 0):
        raise LatentkitError(f"the target bpp must be a positive number, got {bpp!r}")
    return float(bpp)


def check_refine_steps(steps: int) -> int:
    """A count of refinement steps (:mod:`latentkit.codec.refine`): an integer >= 0."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise LatentkitError(f"refinement steps must be an integer >= 0, got {steps!r}")
    return int(steps)


def noise_level(quality: int) -> float:
    """``k`` of a quality: the RMS pixel error (images in [0, 1]) each latent channel's quantization adds,
    times sqrt(12)."""
    return 2.0 ** ((QUALITY_PIVOT - check_quality(quality)) / QUALITY_PER_OCTAVE)


def step_exponents(gains: np.ndarray, quality: int) -> np.ndarray:
    """Per-channel step exponents (int64, in [-128, 127]) for decoder gains ``gains`` (> 0, see
    :func:`latentkit.codec.allocate.decoder_gains`): steps ``k / sqrt(g_c)`` rounded to the 2^(1/8) grid."""
    log_steps = math.log2(noise_level(quality)) - 0.5 * np.log2(np.maximum(gains.astype(np.float64), 1e-30))
    return np.clip(np.round(STEPS_PER_OCTAVE * log_steps), EXP_MIN, EXP_MAX).astype(np.int64)


def quantize(latent: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """Latent C x h x w (float) -> integer symbols C x h x w (int64), ``round(latent / step_c)``."""
    steps = step_sizes(exponents)[:, None, None]
    q = np.rint(latent.astype(np.float32) / steps)
    return np.clip(q, -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)


def dequantize(symbols: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """Integer symbols C x h x w -> float32 latent ``symbols * step_c`` (exact: the same on every run)."""
    return symbols.astype(np.float32) * step_sizes(exponents)[:, None, None]
