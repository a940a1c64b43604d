"""Uniform scalar quantization of latents with one step per channel.

The step of channel ``c`` is ``2 ** (e_c / 8)`` with an integer exponent ``e_c`` in [-128, 127] that the
file carries (one byte per channel), so the decoder never recomputes a float the encoder chose. The encoder
picks ``e_c = round(8 * log2(sigma_c)) + (QUALITY_PIVOT - quality)``: ``sigma_c`` is the posterior's mean
standard deviation in channel ``c`` (how much noise the decoder was trained to tolerate there), and each
quality point halves/doubles the step every 8 points. Quality is an integer 1..100, higher is better.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from decimal import Decimal, getcontext
from typing import Iterator

import numpy as np
import torch

from ..errors import LatentkitError

#: steps are 2 ** (e / STEPS_PER_OCTAVE)
STEPS_PER_OCTAVE = 8
#: at this quality the step equals the posterior standard deviation
QUALITY_PIVOT = 92
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


def step_exponents(sigma: np.ndarray, quality: int) -> np.ndarray:
    """Per-channel step exponents (int64, in [-128, 127]) for posterior standard deviations ``sigma`` (> 0)."""
    base = np.round(STEPS_PER_OCTAVE * np.log2(np.maximum(sigma.astype(np.float64), 1e-30)))
    return np.clip(base + (QUALITY_PIVOT - check_quality(quality)), EXP_MIN, EXP_MAX).astype(np.int64)


def quantize(latent: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """Latent C x h x w (float) -> integer symbols C x h x w (int64), ``round(latent / step_c)``."""
    steps = step_sizes(exponents)[:, None, None]
    q = np.rint(latent.astype(np.float32) / steps)
    return np.clip(q, -MAX_SYMBOL, MAX_SYMBOL).astype(np.int64)


def dequantize(symbols: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """Integer symbols C x h x w -> float32 latent ``symbols * step_c`` (exact: the same on every run)."""
    return symbols.astype(np.float32) * step_sizes(exponents)[:, None, None]


@contextmanager
def posterior_std_probe(vae: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """While active, every encoder pass of `vae` (tiled or not) appends its per-channel mean posterior std
    (a C-vector) to the yielded list. It taps the moments (mean, logvar) where diffusers forms the posterior:
    after ``quant_conv`` if the model has one, else after the encoder."""
    tap = vae.quant_conv if getattr(vae, "quant_conv", None) is not None else vae.encoder
    found: list[torch.Tensor] = []

    def hook(_module, _inputs, moments):
        logvar = moments.float().chunk(2, dim=1)[1].clamp(-30.0, 20.0)  # diffusers' clamp
        found.append(torch.exp(0.5 * logvar).mean(dim=(0, 2, 3)).cpu())

    handle = tap.register_forward_hook(hook)
    try:
        yield found
    finally:
        handle.remove()
