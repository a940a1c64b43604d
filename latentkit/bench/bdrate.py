"""Bjontegaard delta rate (BD-rate) between two rate-distortion curves.

The piecewise-cubic variant (as in JCTVC-L0242 / the VCEG reference scripts' ``pchip`` mode): log-rate is
interpolated as a function of the quality metric by a monotone piecewise cubic Hermite (PCHIP) curve for each
codec, both are integrated over the metric range where the curves overlap, and the mean log-rate difference
is turned into a percentage. ``-20.0`` means the test codec needs 20% fewer bits than the anchor for the same
quality, on average over the overlap.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import LatentkitError

#: Samples per curve when integrating the interpolants over the overlap (trapezoid rule; error << 0.01%).
_GRID = 4001


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson derivatives at the knots of a monotone piecewise cubic through strictly increasing x."""
    h = np.diff(x)
    delta = np.diff(y) / h
    d = np.zeros_like(y)
    if len(x) == 2:
        return np.full_like(y, delta[0])
    for k in range(1, len(x) - 1):
        if delta[k - 1] * delta[k] > 0:  # weighted harmonic mean keeps the curve monotone
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0: float, h1: float, d0: float, d1: float) -> float:
    s = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    if np.sign(s) != np.sign(d0):
        return 0.0
    if np.sign(d0) != np.sign(d1) and abs(s) > abs(3 * d0):
        return 3 * d0
    return s


def pchip(x: np.ndarray, y: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Evaluate the PCHIP interpolant through (x, y) (x strictly increasing) at points xq inside [x0, xn]."""
    d = pchip_slopes(x, y)
    k = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    t = (xq - x[k]) / h
    h00, h10 = (1 + 2 * t) * (1 - t) ** 2, t * (1 - t) ** 2
    h01, h11 = t * t * (3 - 2 * t), t * t * (t - 1)
    return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]


def _curve(rates: Sequence[float], metric: Sequence[float], higher_is_better: bool) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rates, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(m) & (r > 0)
    r, m = r[ok], m[ok]
    if not higher_is_better:
        m = -m
    order = np.argsort(m, kind="stable")
    m, logr = m[order], np.log(r[order])
    keep = np.concatenate([[True], np.diff(m) > 0])  # a function of the metric: one rate per metric value
    if keep.sum() < 2:
        raise LatentkitError("a BD-rate curve needs at least 2 points with distinct metric values and bpp > 0")
    return m[keep], logr[keep]


def bd_rate(anchor_rate: Sequence[float], anchor_metric: Sequence[float], test_rate: Sequence[float],
            test_metric: Sequence[float], higher_is_better: bool = True) -> float:
    """BD-rate of the test curve against the anchor, in percent (negative: the test codec saves bits).

    Args:
        anchor_rate, test_rate: rates of each curve's points (any positive unit, e.g. bpp).
        anchor_metric, test_metric: quality at those points (e.g. PSNR in dB, MS-SSIM in [0, 1], LPIPS).
        higher_is_better: False for distances such as LPIPS; the metric is then negated before fitting.

    Returns ``nan`` when the curves' metric ranges do not overlap.
    """
    ma, la = _curve(anchor_rate, anchor_metric, higher_is_better)
    mt, lt = _curve(test_rate, test_metric, higher_is_better)
    lo, hi = max(ma[0], mt[0]), min(ma[-1], mt[-1])
    if not hi > lo:
        return math.nan
    grid = np.linspace(lo, hi, _GRID)
    diff = pchip(mt, lt, grid) - pchip(ma, la, grid)
    mean = float(np.sum((diff[1:] + diff[:-1]) / 2) / (_GRID - 1))
    return (math.exp(mean) - 1) * 100
