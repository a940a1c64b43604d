"""The residual alphabet and its probability tables: integer CDFs every machine builds identically.

The residual ``r = q - round(mu)`` (see :mod:`.context` for ``mu``) has a discretized Laplace distribution centred
on the fractional part of ``mu`` (one of ``NUM_OFFSETS`` offsets in (-1/2, 1/2)) with one of ``NUM_SCALES`` scales
``b_s = 2 ** (s/4 - 5)`` symbols. Residuals with ``|r| < EXACT`` are symbols of their own; larger ones fall into
classes ``[EXACT * 2**k, EXACT * 2**(k+1))`` whose offset is coded uniformly. The probability tables are
integers computed with fixed-point integer arithmetic from constants that :mod:`decimal` derives (correctly
rounded), so encoder and decoder build identical models on every machine.
"""

from __future__ import annotations

from decimal import Decimal, getcontext
from functools import lru_cache

import numpy as np

EXACT = 64
NUM_CLASSES = 15
ALPHABET = 2 * EXACT - 1 + 2 * NUM_CLASSES
#: the first alphabet index that is an escape class
FIRST_ESCAPE = 2 * EXACT - 1
MAX_RESIDUAL = (EXACT << NUM_CLASSES) - 1
NUM_SCALES = 64
NUM_OFFSETS = 16
MAX_ACTIVITY = 1 << 30
#: lg values 0..NUM_LG - 1 (round(4 log2(MAX_ACTIVITY + 1)) = 120)
NUM_LG = 121
_FP = 62  # fixed-point fraction bits
_PROB_BITS = 30


def _fp(x: Decimal) -> int:
    return int(x * (1 << _FP))


def _fp_pow(r: int, m: int) -> int:
    result, base = 1 << _FP, r
    while m:
        if m & 1:
            result = (result * base) >> _FP
        base = (base * base) >> _FP
        m >>= 1
    return result


def offsets() -> list[Decimal]:
    """The Laplace centres of the offset indices, in symbols: the middles of NUM_OFFSETS equal parts of
    [-1/2, 1/2), ``(4 i - 30) / 64`` for i in 0..15."""
    step = 64 // NUM_OFFSETS
    return [Decimal(step * i + step // 2 - 32) / 64 for i in range(NUM_OFFSETS)]


@lru_cache(maxsize=1)
def tables() -> tuple[np.ndarray, np.ndarray]:
    """(probabilities NUM_SCALES x NUM_OFFSETS x ALPHABET as float64 holding exact integers, code lengths in bits).

    Table (s, i) is the Laplace distribution of scale ``b_s`` centred on offset ``f_i`` integrated over the unit
    bins around each integer residual: for k >= 1 it is proportional to ``rho ** (k - f)``, for k <= -1 to
    ``rho ** (|k| + f)``, with ``rho = exp(-1 / b)``. The offsets are symmetric (``f_{15-i} = -f_i``), and the
    table of ``-f`` is that of ``f`` mirrored (residual ``k`` <-> ``-k``, the positive escape classes <-> the
    negative), integer for integer, so the second half is mirrored rather than computed: the tables are built
    once per process and this halves that (0.15-0.22 s to about half on this project's 2-core Xeon). The four
    exponentials of each table are one and its reciprocal times ``rho ** (1/2)`` (once per scale): 0.15 to
    0.07 s more (session 20). tests/test_codec_golden.py pins their sha256.
    """
    getcontext().prec = 50
    ln2, half = Decimal(2).ln(), Decimal(1) / 2
    probs = np.zeros((NUM_SCALES, NUM_OFFSETS, ALPHABET), dtype=np.float64)
    one = 1 << _FP
    mirror = np.r_[np.arange(2 * EXACT - 2, -1, -1),  # residual k -> -k
                   np.arange(NUM_CLASSES) + FIRST_ESCAPE + NUM_CLASSES, np.arange(NUM_CLASSES) + FIRST_ESCAPE]
    fs = offsets()
    for s in range(NUM_SCALES):
        inv_b = (ln2 * (Decimal(5) - Decimal(s) / 4)).exp()
        rho = _fp((-inv_b).exp())
        powers = [_fp_pow(rho, k) for k in range(EXACT)]
        bounds = [_fp_pow(rho, EXACT << c) for c in range(NUM_CLASSES + 1)]
        root = (-half * inv_b).exp()  # rho^(1/2)
        edge = 1 / root - root  # rho^(-1/2) - rho^(1/2)
        for i, f in enumerate(fs[:NUM_OFFSETS // 2]):
            # the common factor (1 - rho) of the geometric sums is folded into every weight
            up = (f * inv_b).exp()  # rho^(-f); rho^(1/2 -/+ f) below are root * rho^(-/+f)
            pos, neg = _fp(half * up * edge), _fp(half / up * edge)
            centre = _fp(1 - half * root * up - half * root / up)
            weights = [0] * ALPHABET
            weights[EXACT - 1] = (centre * (one - rho)) >> _FP
            for k in range(1, EXACT):
                g = (powers[k] * (one - rho)) >> _FP
                weights[EXACT - 1 + k], weights[EXACT - 1 - k] = (pos * g) >> _FP, (neg * g) >> _FP
            for c in range(NUM_CLASSES):
                g = bounds[c] - bounds[c + 1]
                weights[2 * EXACT - 1 + c] = (pos * g) >> _FP
                weights[2 * EXACT - 1 + NUM_CLASSES + c] = (neg * g) >> _FP
            total = sum(weights)
            probs[s, i] = [(w << _PROB_BITS) // total or 1 for w in weights]  # at least 1
            probs[s, NUM_OFFSETS - 1 - i] = probs[s, i, mirror]
    bits = -np.log2(probs / probs.sum(-1, keepdims=True))
    return probs, bits


@lru_cache(maxsize=1)
def _lg_thresholds() -> np.ndarray:
    # lg(a) = j for a + 1 in [2 ** ((j - 0.5) / 4), 2 ** ((j + 0.5) / 4))
    getcontext().prec = 50
    ln2 = Decimal(2).ln()
    t = [0]
    j = 1
    while True:
        x = int(((Decimal(2 * j - 1) / 8) * ln2).exp().to_integral_value(rounding="ROUND_CEILING")) - 1
        if x > MAX_ACTIVITY:
            break
        t.append(max(x, t[-1]))
        j += 1
    assert len(t) == NUM_LG
    return np.array(t, dtype=np.int64)


def lg(a: np.ndarray) -> np.ndarray:
    """round(4 log2(a + 1)) for integer activities a >= 0 (capped at MAX_ACTIVITY), by integer thresholds: in
    0..NUM_LG - 1."""
    return _lg_thresholds().searchsorted(a, side="right") - 1  # the thresholds end at or below MAX_ACTIVITY


def to_symbols(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residuals -> (alphabet index, escape offset, escape alphabet size; size 0 = no escape)."""
    mag = np.abs(r)
    if mag.max(initial=0) < EXACT:  # no escapes (the common case: skips the class arithmetic)
        zeros = np.zeros(len(mag), dtype=np.int32)
        return (r + (EXACT - 1)).astype(np.int32), zeros, zeros
    exact = mag < EXACT
    cls = np.where(exact, 0, np.floor(np.log2(np.maximum(mag, EXACT) / EXACT)).astype(np.int64))
    # guard float log2 at powers of two
    cls = np.where(~exact & (mag < (EXACT << cls)), cls - 1, cls)
    cls = np.where(~exact & (mag >= (EXACT << (cls + 1))), cls + 1, cls)
    sym = np.where(exact, r + EXACT - 1, 2 * EXACT - 1 + cls + np.where(r < 0, NUM_CLASSES, 0))
    offset = np.where(exact, 0, mag - (EXACT << cls))
    size = np.where(exact, 0, EXACT << cls)
    return sym.astype(np.int32), offset.astype(np.int32), size.astype(np.int32)


def from_symbols(sym: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_symbols`: (alphabet index, escape offset) -> residuals."""
    sym = sym.astype(np.int64)
    exact = sym < 2 * EXACT - 1
    c = sym - (2 * EXACT - 1)
    neg = c >= NUM_CLASSES
    cls = np.where(neg, c - NUM_CLASSES, c)
    mag = (EXACT << np.clip(cls, 0, NUM_CLASSES - 1)) + offset
    return np.where(exact, sym - EXACT + 1, np.where(neg, -mag, mag))


def escape_sizes(sym: np.ndarray) -> np.ndarray:
    """The escape alphabet size of each alphabet index (0: no escape), as :func:`to_symbols` gives it."""
    c = sym.astype(np.int64) - (2 * EXACT - 1)
    return np.where(c < 0, 0, EXACT << np.where(c >= NUM_CLASSES, c - NUM_CLASSES, c)).astype(np.int32)
