"""Entropy coding of quantized latents with ``constriction``'s range coder.

Each channel plane (h x w integer symbols) is coded as residuals ``r = q - pred`` of the MED predictor
(median of left, up and left + up - up-left; JPEG-LS), in anti-diagonal (wavefront) order so that a whole
diagonal is decoded in one batched coder call while left, up and up-left are already known.

Each residual has a two-sided geometric (discrete Laplace) distribution ``p(r) ~ rho ** |r|`` with one of
``NUM_SCALES`` scales ``b_s = 2 ** (s/4 - 3)`` (``rho = exp(-1/b)``). Residuals with ``|r| < EXACT`` are
symbols of their own; larger ones fall into classes ``[EXACT * 2**k, EXACT * 2**(k+1))`` whose offset is
coded uniformly. Probability tables are integers computed with fixed-point integer arithmetic from
``rho`` values that :mod:`decimal` derives (correctly rounded), so both sides build identical tables on
every machine.

The scale index of each residual is ``s = clip(floor(m * lg(a) / 8) + param_c - PARAM_BIAS, 0, NUM_SCALES - 1)``
with the causal activity ``a = 2|r_left| + 2|r_up| + |r_upleft| + |r_prev|`` (``r_prev``: the co-located
residual of the previous channel) and ``lg(a) = round(4 log2(a + 1))``. The encoder picks, by exact code
length, the slope ``m`` in 0..15 (``m = 0`` is the static per-channel model) and one byte ``param_c`` per
channel; both travel in the file header.
"""

from __future__ import annotations

from decimal import Decimal, getcontext
from functools import lru_cache

import constriction
import numpy as np

from ..errors import LatentkitError

EXACT = 64
NUM_CLASSES = 15
ALPHABET = 2 * EXACT - 1 + 2 * NUM_CLASSES
MAX_RESIDUAL = (EXACT << NUM_CLASSES) - 1
NUM_SCALES = 64
PARAM_BIAS = 128
MAX_ACTIVITY = 1 << 24
#: entropy models: 0 static, 1..MAX_MODEL context with slope model / 8 (4 bits in the header)
MAX_MODEL = 15
_FP = 62  # fixed-point fraction bits for rho powers
_PROB_BITS = 30


def _rho_fixed() -> list[int]:
    getcontext().prec = 50
    ln2 = Decimal(2).ln()
    out = []
    for s in range(NUM_SCALES):
        inv_b = (ln2 * (Decimal(3) - Decimal(s) / 4)).exp()  # 1 / b_s
        out.append(int((-inv_b).exp() * (1 << _FP)))
    return out


def _fp_pow(r: int, m: int) -> int:
    result, base = 1 << _FP, r
    while m:
        if m & 1:
            result = (result * base) >> _FP
        base = (base * base) >> _FP
        m >>= 1
    return result


@lru_cache(maxsize=1)
def tables() -> tuple[np.ndarray, np.ndarray]:
    """(probabilities NUM_SCALES x ALPHABET as float64 holding exact integers, code lengths in bits)."""
    probs = np.zeros((NUM_SCALES, ALPHABET), dtype=np.float64)
    for s, r in enumerate(_rho_fixed()):
        one = 1 << _FP
        weights = [0] * ALPHABET
        for k in range(-EXACT + 1, EXACT):
            weights[k + EXACT - 1] = (_fp_pow(r, abs(k)) * (one - r)) >> _FP
        for c in range(NUM_CLASSES):
            w = _fp_pow(r, EXACT << c) - _fp_pow(r, EXACT << (c + 1))
            weights[2 * EXACT - 1 + c] = weights[2 * EXACT - 1 + NUM_CLASSES + c] = w
        total = sum(weights)
        probs[s] = [max(1, (w << _PROB_BITS) // total) for w in weights]
    bits = -np.log2(probs / probs.sum(1, keepdims=True))
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
    return np.array(t, dtype=np.int64)


def lg(a: np.ndarray) -> np.ndarray:
    """round(4 log2(a + 1)) for integer activities a >= 0, by integer thresholds."""
    return np.searchsorted(_lg_thresholds(), np.minimum(a, MAX_ACTIVITY), side="right") - 1


def to_symbols(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residuals -> (alphabet index, escape offset, escape alphabet size; size 0 = no escape)."""
    mag = np.abs(r)
    exact = mag < EXACT
    cls = np.where(exact, 0, np.floor(np.log2(np.maximum(mag, EXACT) / EXACT)).astype(np.int64))
    # guard float log2 at powers of two
    cls = np.where(~exact & (mag < (EXACT << cls)), cls - 1, cls)
    cls = np.where(~exact & (mag >= (EXACT << (cls + 1))), cls + 1, cls)
    sym = np.where(exact, r + EXACT - 1, 2 * EXACT - 1 + cls + np.where(r < 0, NUM_CLASSES, 0))
    offset = np.where(exact, 0, mag - (EXACT << cls))
    size = np.where(exact, 0, EXACT << cls)
    return sym.astype(np.int32), offset.astype(np.int32), size.astype(np.int32)


def _from_symbols(sym: np.ndarray, offset: np.ndarray) -> np.ndarray:
    sym = sym.astype(np.int64)
    exact = sym < 2 * EXACT - 1
    c = sym - (2 * EXACT - 1)
    neg = c >= NUM_CLASSES
    cls = np.where(neg, c - NUM_CLASSES, c)
    mag = (EXACT << np.clip(cls, 0, NUM_CLASSES - 1)) + offset
    return np.where(exact, sym - EXACT + 1, np.where(neg, -mag, mag))


def _escape_sizes(sym: np.ndarray) -> np.ndarray:
    c = sym.astype(np.int64) - (2 * EXACT - 1)
    return np.where(c < 0, 0, EXACT << np.where(c >= NUM_CLASSES, c - NUM_CLASSES, c)).astype(np.int32)


def med_predict(left: np.ndarray, up: np.ndarray, upleft: np.ndarray, has_left: np.ndarray,
                has_up: np.ndarray) -> np.ndarray:
    """The MED prediction; on the first row the left neighbour, on the first column the up one, else 0."""
    med = np.maximum(np.minimum(left, up), np.minimum(np.maximum(left, up), left + up - upleft))
    return np.where(has_left & has_up, med, np.where(has_left, left, np.where(has_up, up, 0)))


def _shifted(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left = np.zeros_like(x)
    left[:, 1:] = x[:, :-1]
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    upleft = np.zeros_like(x)
    upleft[1:, 1:] = x[:-1, :-1]
    return left, up, upleft


@lru_cache(maxsize=8)
def wavefronts(h: int, w: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The anti-diagonals of an h x w plane, in coding order: list of (rows, cols)."""
    out = []
    for d in range(h + w - 1):
        i = np.arange(max(0, d - w + 1), min(h, d + 1))
        out.append((i, d - i))
    return out


def residuals(q: np.ndarray) -> np.ndarray:
    """MED prediction residuals (int64, h x w) of one channel's symbols q (h x w)."""
    h, w = q.shape
    left, up, upleft = _shifted(q)
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    return q - med_predict(left, up, upleft, cols > 0, rows > 0)


def activity(absr: np.ndarray, prev: np.ndarray | int) -> np.ndarray:
    """Causal activity ``2|r_left| + 2|r_up| + |r_upleft| + prev`` from absolute residuals (h x w) and the
    previous channel's co-located absolute residuals (h x w, or 0 for the first channel)."""
    left, up, upleft = _shifted(absr)
    return 2 * left + 2 * up + upleft + prev


def _scale_index(lga: np.ndarray, model: int, param: int) -> np.ndarray:
    return np.clip(((model * lga) >> 3) + (param - PARAM_BIAS), 0, NUM_SCALES - 1)


def _context_histogram(r: np.ndarray, prev: np.ndarray | int) -> tuple[np.ndarray, float]:
    """(counts of (lg activity, alphabet symbol) pairs, bits of the escape offsets) of one channel's residuals."""
    sym, _, size = to_symbols(np.clip(r, -MAX_RESIDUAL, MAX_RESIDUAL))
    sym = sym.ravel()
    lga = lg(activity(np.abs(r), prev)).ravel()
    pair = np.bincount(lga * ALPHABET + sym, minlength=(lga.max() + 1) * ALPHABET).reshape(-1, ALPHABET)
    return pair, float(np.log2(size[size > 0]).sum())


def _param_costs(pair: np.ndarray, model: int) -> np.ndarray:
    """Code length in bits (escape offsets excluded) of a context histogram for each of the 256 params."""
    _, bits = tables()
    cands = np.arange(256)
    costs = np.zeros(256)
    for g in np.nonzero(pair.sum(1))[0]:
        costs += bits[_scale_index(np.full(256, g), model, cands)] @ pair[g]
    return costs


def channel_bits(q: np.ndarray, model: int = 8) -> float:
    """Estimated code length in bits of one channel's symbols (h x w) on its own (no previous channel), with
    context `model` and the best param: what the encoder would pay, within a few bytes."""
    pair, escape_bits = _context_histogram(residuals(q), 0)
    return float(_param_costs(pair, model).min()) + escape_bits


def choose_model(q: np.ndarray) -> tuple[int, np.ndarray, dict[int, float]]:
    """Pick the entropy model for symbols C x h x w by exact code length.

    Returns (model, per-channel params uint8, estimated payload bits per model). ``model`` 0 is static,
    1..MAX_MODEL the context model with slope ``model / 8``.
    """
    res = [residuals(q[c]) for c in range(q.shape[0])]
    est = np.zeros(MAX_MODEL + 1)
    params = np.zeros((MAX_MODEL + 1, len(res)), dtype=np.uint8)
    for c, r in enumerate(res):
        pair, escape_bits = _context_histogram(r, np.abs(res[c - 1]) if c else 0)
        for m in range(MAX_MODEL + 1):
            costs = _param_costs(pair, m)
            params[m, c] = int(np.argmin(costs))
            est[m] += float(costs.min()) + escape_bits
    best = int(np.argmin(est))
    return best, params[best], dict(enumerate(est.tolist()))


def encode_symbols(q: np.ndarray, model: int, params: np.ndarray) -> bytes:
    """Symbols C x h x w (int) -> range-coded bytes, with the entropy `model` and per-channel `params`."""
    probs, _ = tables()
    fam, uni = constriction.stream.model.Categorical(perfect=False), constriction.stream.model.Uniform()
    enc = constriction.stream.queue.RangeEncoder()
    C, h, w = q.shape
    prev = np.zeros((h, w), dtype=np.int64)
    for c in range(C):
        r = residuals(q[c])
        if np.abs(r).max(initial=0) > MAX_RESIDUAL:
            raise LatentkitError("latent symbols out of range: use a lower quality")
        sym, off, size = to_symbols(r)
        s_idx = _scale_index(lg(activity(np.abs(r), prev)), model, int(params[c]))
        for rows, cols in wavefronts(h, w):
            enc.encode(sym[rows, cols], fam, probs[s_idx[rows, cols]])
            esc = size[rows, cols] > 0
            if esc.any():
                enc.encode(off[rows, cols][esc], uni, size[rows, cols][esc])
        prev = np.abs(r)
    return enc.get_compressed().astype("<u4").tobytes()


def decode_symbols(data: bytes, shape: tuple[int, int, int], model: int, params: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_symbols`. Raises :class:`LatentkitError` if `data` is not a valid stream."""
    if len(data) % 4:
        raise LatentkitError("corrupt .latent payload (length is not a whole number of words)")
    probs, _ = tables()
    fam, uni = constriction.stream.model.Categorical(perfect=False), constriction.stream.model.Uniform()
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    C, h, w = shape
    q = np.zeros(shape, dtype=np.int64)
    prev = np.zeros((h, w), dtype=np.int64)
    for c in range(C):
        qc = q[c]
        absr = np.zeros((h, w), dtype=np.int64)
        for rows, cols in wavefronts(h, w):
            hl, hu = cols > 0, rows > 0
            cl, ru = np.maximum(cols - 1, 0), np.maximum(rows - 1, 0)
            a = 2 * absr[rows, cl] * hl + 2 * absr[ru, cols] * hu + absr[ru, cl] * (hl & hu) + prev[rows, cols]
            s_idx = _scale_index(lg(a), model, int(params[c]))
            sym = dec.decode(fam, probs[s_idx])
            size = _escape_sizes(sym)
            off = np.zeros(len(rows), dtype=np.int64)
            esc = size > 0
            if esc.any():
                off[esc] = dec.decode(uni, size[esc])
            r = _from_symbols(sym, off)
            pred = med_predict(qc[rows, cl], qc[ru, cols], qc[ru, cl], hl, hu)
            qc[rows, cols] = pred + r
            absr[rows, cols] = np.abs(r)
        prev = absr
    if not dec.maybe_exhausted():
        raise LatentkitError("corrupt .latent payload (data left over after the last symbol)")
    return q
