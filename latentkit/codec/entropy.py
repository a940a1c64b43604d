"""Entropy coding of quantized latents with ``constriction``'s range coder (format version 2).

Each channel plane (h x w integer symbols ``q``) is coded in wavefronts ``d = 2 i + j`` (row i, column j): a
whole wavefront is coded in one batched coder call while every neighbour the model reads is already known.

**Prediction.** ``mu = sum_k w_k n_k / 64`` over the neighbours :data:`NEIGHBOURS` (ten causal ones in the
plane, among them the MED/LOCO-I median predictor, plus the previous channel's symbol at the same place; outside
the plane a neighbour falls back to a nearer one, see :func:`neighbours`) with integer weights ``w`` in
[-128, 127]. The encoder fits the weights per image and channel (least squares and least absolute deviations,
keeping whichever codes shorter, or the defaults) and sends them in the payload.

**Distribution.** The residual ``r = q - round(mu)`` has a discretized Laplace distribution centred on the
fractional part of ``mu`` (one of ``NUM_OFFSETS`` offsets in (-1/2, 1/2)) with one of ``NUM_SCALES`` scales
``b_s = 2 ** (s/4 - 5)`` symbols. Residuals with ``|r| < EXACT`` are symbols of their own; larger ones fall into
classes ``[EXACT * 2**k, EXACT * 2**(k+1))`` whose offset is coded uniformly. The probability tables are
integers computed with fixed-point integer arithmetic from constants that :mod:`decimal` derives (correctly
rounded), and everything the decoder computes is integer arithmetic, so both sides build identical models on
every machine.

**Scale.** ``s = clip(floor(m * lg(a) / 8) + param_c - PARAM_BIAS, FLOORS[f_c], NUM_SCALES - 1)`` with the
causal activity ``a`` (:func:`activity`) of the neighbours' absolute prediction errors ``|64 q - 64 mu|`` and
``lg(a) = round(4 log2(a + 1))``. The encoder picks, by exact code length, the slope ``m`` in 0..15 and one
byte ``param_c`` per channel (both in the file header) and each channel's floor index ``f_c`` (in the payload):
sparse channels at low rates want very small scales, dense ones a floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, getcontext
from functools import lru_cache

import constriction
import numpy as np

from ..errors import LatentkitError
from .quant import MAX_SYMBOL

EXACT = 64
NUM_CLASSES = 15
ALPHABET = 2 * EXACT - 1 + 2 * NUM_CLASSES
MAX_RESIDUAL = (EXACT << NUM_CLASSES) - 1
NUM_SCALES = 64
NUM_OFFSETS = 16
PARAM_BIAS = 128
#: lowest scale index a channel may use (its index travels in the payload, 2 bits)
FLOORS = (0, 4, 8, 12)
MAX_ACTIVITY = 1 << 30
#: entropy models: the activity slope m / 8, m in 0..MAX_MODEL (4 bits in the header)
MAX_MODEL = 15
#: what the linear predictor reads, in weight order
NEIGHBOURS = ("left", "up", "upleft", "upright", "left2", "up2", "med", "up2right", "up2left", "upleft2", "prev")
#: predictor weights are integers in units of 1 / 2 ** WEIGHT_SHIFT
WEIGHT_SHIFT = 6
WEIGHT_MIN, WEIGHT_MAX = -128, 127
#: the weights the payload codes differences from (medians of fits on validation latents)
DEFAULT_WEIGHTS = (8, -3, 8, 12, 8, 3, 21, 0, 0, 0, 0)
#: table (scale index, offset index) that codes those differences (b = 4 weight units, centre +1/32)
WEIGHT_TABLE = (28, NUM_OFFSETS // 2)
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
    ``rho ** (|k| + f)``, with ``rho = exp(-1 / b)``.
    """
    getcontext().prec = 50
    ln2, half = Decimal(2).ln(), Decimal(1) / 2
    probs = np.zeros((NUM_SCALES, NUM_OFFSETS, ALPHABET), dtype=np.float64)
    one = 1 << _FP
    for s in range(NUM_SCALES):
        inv_b = (ln2 * (Decimal(5) - Decimal(s) / 4)).exp()
        rho = _fp((-inv_b).exp())
        powers = [_fp_pow(rho, k) for k in range(EXACT)]
        bounds = [_fp_pow(rho, EXACT << c) for c in range(NUM_CLASSES + 1)]
        edge = (half * inv_b).exp() - (-half * inv_b).exp()  # rho^(-1/2) - rho^(1/2)
        for i, f in enumerate(offsets()):
            # the common factor (1 - rho) of the geometric sums is folded into every weight
            pos, neg = _fp(half * (f * inv_b).exp() * edge), _fp(half * (-f * inv_b).exp() * edge)
            centre = _fp(1 - half * (-(half - f) * inv_b).exp() - half * (-(half + f) * inv_b).exp())
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
            probs[s, i] = [max(1, (w << _PROB_BITS) // total) for w in weights]
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


@lru_cache(maxsize=8)
def wavefronts(h: int, w: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The wavefronts ``2 i + j = d`` of an h x w plane, in coding order: list of (rows, cols)."""
    out = []
    for d in range(2 * (h - 1) + w):
        i = np.arange(max(0, -(-(d - w + 1) // 2)), min(h - 1, d // 2) + 1)
        out.append((i, d - 2 * i))
    return out


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.divmod(np.arange(h * w), w)
    return rows, cols


def neighbours(plane: np.ndarray, prev: np.ndarray | None, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The predictor's inputs (len(NEIGHBOURS) x n, int64) at positions (rows, cols) of a channel plane (h x w).

    Missing neighbours fall back: left -> up -> 0, up -> left, up-left and up-right -> up, left-left -> left,
    up-up -> up, up-up-left and up-up-right -> up-up, up-left-left -> up-left; ``prev`` (the previous
    channel's symbols, h x w) is 0 for the first channel. ``med`` is the median of left, up and
    left + up - up-left."""
    h, w = plane.shape
    hl, hu, hr = cols > 0, rows > 0, cols < w - 1
    r1, r2 = np.maximum(rows - 1, 0), np.maximum(rows - 2, 0)
    c1, c2, cr = np.maximum(cols - 1, 0), np.maximum(cols - 2, 0), np.minimum(cols + 1, w - 1)
    up = np.where(hu, plane[r1, cols], 0)
    left = np.where(hl, plane[rows, c1], up)
    up = np.where(hu, up, left)
    upleft = np.where(hl & hu, plane[r1, c1], up)
    upright = np.where(hu & hr, plane[r1, cr], up)
    left2 = np.where(cols > 1, plane[rows, c2], left)
    up2 = np.where(rows > 1, plane[r2, cols], up)
    med = np.maximum(np.minimum(left, up), np.minimum(np.maximum(left, up), left + up - upleft))
    up2right = np.where((rows > 1) & hr, plane[r2, cr], up2)
    up2left = np.where((rows > 1) & hl, plane[r2, c1], up2)
    upleft2 = np.where(hu & (cols > 1), plane[r1, c2], upleft)
    other = prev[rows, cols] if prev is not None else np.zeros_like(up)
    return np.stack([left, up, upleft, upright, left2, up2, med, up2right, up2left, upleft2, other]).astype(np.int64)


def activity(err: np.ndarray, prev_err: np.ndarray | None, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Causal activity ``2|e_left| + 2|e_up| + |e_upleft| + |e_upright| + |e_left2| + |e_up2| + 2|e_prev|`` at
    (rows, cols) from the absolute prediction errors ``err`` of the plane and ``prev_err`` of the previous
    channel's (h x w each, units of 1/64 symbol; 0 where not coded yet; terms outside the plane count 0)."""
    h, w = err.shape
    hl, hu = cols > 0, rows > 0
    r1, c1 = np.maximum(rows - 1, 0), np.maximum(cols - 1, 0)
    a = (2 * err[rows, c1] * hl + 2 * err[r1, cols] * hu + err[r1, c1] * (hl & hu)
         + err[r1, np.minimum(cols + 1, w - 1)] * (hu & (cols < w - 1)))
    a = a + err[rows, np.maximum(cols - 2, 0)] * (cols > 1) + err[np.maximum(rows - 2, 0), cols] * (rows > 1)
    return a + 2 * prev_err[rows, cols] if prev_err is not None else a


def _predict(nbrs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu in units of 1/64 symbol, offset index) from neighbours (len(NEIGHBOURS) x n) and integer weights."""
    mu = np.asarray(weights, dtype=np.int64) @ nbrs
    frac = mu - (((mu + (1 << (WEIGHT_SHIFT - 1))) >> WEIGHT_SHIFT) << WEIGHT_SHIFT)  # in [-32, 32)
    return mu, (frac + (1 << (WEIGHT_SHIFT - 1))) * NUM_OFFSETS >> WEIGHT_SHIFT


def _rounded(mu: np.ndarray) -> np.ndarray:
    return (mu + (1 << (WEIGHT_SHIFT - 1))) >> WEIGHT_SHIFT


def fit_weights(q: np.ndarray, nbrs: np.ndarray, robust: bool = True) -> list[np.ndarray]:
    """Candidate predictor weights (int64, len(NEIGHBOURS); units of 1/64) of one channel's symbols (h x w)
    from their neighbours (:func:`neighbours` over the whole plane in raster order): the least-squares fit and,
    if `robust`, a least-absolute-deviations fit (a few reweighted least-squares rounds; Laplace residuals
    favour it); all zeros for an all-zero plane. Encoder only: the weights travel in the file."""
    a = nbrs.T.astype(np.float64)
    y = q.ravel().astype(np.float64)
    if not np.any(y):
        return [np.zeros(len(NEIGHBOURS), dtype=np.int64)]

    def solve(wt: np.ndarray) -> np.ndarray:  # weighted least squares by the normal equations (11 x 11)
        aw = a * wt[:, None]
        return np.linalg.lstsq(np.einsum("ni,nj->ij", aw, a), np.einsum("ni,n->i", aw, y), rcond=None)[0]

    sol = solve(np.ones_like(y))
    out = [sol]
    if robust:
        for _ in range(3):
            sol = solve(1 / np.maximum(np.abs(y - a @ sol), 0.5))
        out.append(sol)
    return [np.clip(np.round(s * (1 << WEIGHT_SHIFT)), WEIGHT_MIN, WEIGHT_MAX).astype(np.int64) for s in out]


def _weight_bits(weights: np.ndarray) -> float:
    """Bits of one channel's weights in the payload: a flag, then (unless default) the differences."""
    if np.array_equal(weights, DEFAULT_WEIGHTS):
        return 1.0
    _, bits = tables()
    sym, _, size = to_symbols(np.asarray(weights) - np.array(DEFAULT_WEIGHTS))
    return 1.0 + float(bits[WEIGHT_TABLE][sym].sum() + np.log2(size[size > 0]).sum())


class _Channel:
    """One channel's coding plan: residual symbols, offset indices and log-activities, flattened raster order."""

    def __init__(self, q: np.ndarray, nbrs: np.ndarray, prev_err: np.ndarray | None, weights: np.ndarray):
        h, w = q.shape
        rows, cols = _grid(h, w)
        self.weights = weights
        mu, self.offset = _predict(nbrs, weights)
        self.r = q.ravel() - _rounded(mu)
        if np.abs(self.r).max(initial=0) > MAX_RESIDUAL:
            raise LatentkitError("latent symbols out of range: use a lower quality")
        self.sym, _, self.size = to_symbols(self.r)
        self.err = np.abs((q.ravel() << WEIGHT_SHIFT) - mu).reshape(h, w)
        self.lga = lg(activity(self.err, prev_err, rows, cols))

    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The context histogram's non-zero cells: (lg activity, offset index x ALPHABET + symbol, count)."""
        width = NUM_OFFSETS * ALPHABET
        keys, counts = np.unique(self.lga * width + self.offset * ALPHABET + self.sym, return_counts=True)
        return keys // width, keys % width, counts

    def side_bits(self) -> float:
        """Bits outside the modelled symbols: escape offsets, the floor index and the weights."""
        return float(np.log2(self.size[self.size > 0]).sum()) + np.log2(len(FLOORS)) + _weight_bits(self.weights)


def _scale_index(lga: np.ndarray, model: int, param: np.ndarray | int, floor: int) -> np.ndarray:
    return np.clip(((model * lga) >> 3) + (np.asarray(param) - PARAM_BIAS), FLOORS[floor], NUM_SCALES - 1)


def _param_costs(cells: tuple[np.ndarray, np.ndarray, np.ndarray], models: range | list[int]) -> np.ndarray:
    """Code length in bits (side bits excluded) of a context histogram (:meth:`_Channel.cells`): models x floors
    x 256 params."""
    _, bits = tables()
    g_idx, k_idx, counts = cells
    groups, starts = np.unique(g_idx, return_index=True)
    # groups x scales, by elementwise sums (no BLAS: its threads stall on small products when cores are busy)
    per_scale = np.add.reduceat(bits.reshape(NUM_SCALES, -1)[:, k_idx].T * counts[:, None], starts, axis=0)
    cands = np.arange(256)
    out = np.zeros((len(models), len(FLOORS), 256))
    for j, m in enumerate(models):
        for f in range(len(FLOORS)):
            idx = _scale_index(groups[:, None], m, cands[None, :], f)  # groups x params
            out[j, f] = np.take_along_axis(per_scale, idx, axis=1).sum(0)
    return out


def _channels(q: np.ndarray, weights: np.ndarray | None = None) -> list[_Channel]:
    """Coding plans of every channel; with `weights` None, each channel's weights are the cheapest of the
    default and the fitted ones (by the code length with model 8)."""
    out: list[_Channel] = []
    rows, cols = _grid(*q.shape[1:])
    for c in range(q.shape[0]):
        nbrs = neighbours(q[c], q[c - 1] if c else None, rows, cols)
        prev_err = out[-1].err if c else None
        if weights is not None:
            out.append(_Channel(q[c], nbrs, prev_err, weights[c]))
            continue
        cands = [_Channel(q[c], nbrs, prev_err, wts)
                 for wts in [np.array(DEFAULT_WEIGHTS)] + fit_weights(q[c], nbrs)]
        out.append(min(cands, key=lambda ch: _param_costs(ch.cells(), [8]).min() + ch.side_bits()))
    return out


def channel_bits(q: np.ndarray, model: int = 8) -> float:
    """Estimated code length in bits of one channel's symbols (h x w) on its own (no previous channel), with
    least-squares weights, context `model` and the best floor and param: what the encoder would pay, within a few
    bytes (it may find slightly shorter codes). Fast enough for the encoder's rate-distortion search."""
    nbrs = neighbours(q, None, *_grid(*q.shape))
    ch = _Channel(q, nbrs, None, fit_weights(q, nbrs, robust=False)[0])
    return float(_param_costs(ch.cells(), [model]).min()) + ch.side_bits()


@dataclass
class Plan:
    """How a latent's symbols are coded: the header's part (``model``, ``params``) and the payload's side
    information (per-channel scale ``floors`` indices and predictor ``weights``, C x len(NEIGHBOURS))."""

    model: int
    params: np.ndarray
    floors: np.ndarray
    weights: np.ndarray
    est_bits: float = 0.0


def choose_model(q: np.ndarray) -> Plan:
    """Plan the coding of symbols C x h x w by exact code length: the model ``m`` in 0..MAX_MODEL shared by
    the channels, then each channel's floor and param (``est_bits``: the payload's estimated size in bits)."""
    chans = _channels(q)
    costs = np.stack([_param_costs(ch.cells(), range(MAX_MODEL + 1)) for ch in chans])  # C x M x F x P
    side = sum(ch.side_bits() for ch in chans)
    total = costs.min(axis=(2, 3)).sum(0) + side
    m = int(np.argmin(total))
    best = costs[:, m].reshape(len(chans), -1).argmin(1)
    floors, params = np.divmod(best, 256)
    return Plan(m, params.astype(np.uint8), floors, np.stack([ch.weights for ch in chans]), float(total[m]))


def _coders() -> tuple:
    return constriction.stream.model.Categorical(perfect=False), constriction.stream.model.Uniform()


def _encode_residuals(enc, r: np.ndarray, probs: np.ndarray) -> None:
    fam, uni = _coders()
    sym, off, size = to_symbols(r)
    enc.encode(sym, fam, probs)
    esc = size > 0
    if esc.any():
        enc.encode(off[esc], uni, size[esc])


def _decode_residuals(dec, probs: np.ndarray) -> np.ndarray:
    fam, uni = _coders()
    sym = dec.decode(fam, probs)
    size = _escape_sizes(sym)
    off = np.zeros(len(sym), dtype=np.int64)
    esc = size > 0
    if esc.any():
        off[esc] = dec.decode(uni, size[esc])
    return _from_symbols(sym, off)


def _weight_probs() -> np.ndarray:
    probs, _ = tables()
    return np.repeat(probs[WEIGHT_TABLE][None], len(NEIGHBOURS), axis=0)


def _encode_uniform(enc, value: int, size: int) -> None:
    enc.encode(np.array([value], dtype=np.int32), _coders()[1], np.array([size], dtype=np.int32))


def _decode_uniform(dec, size: int) -> int:
    return int(dec.decode(_coders()[1], np.array([size], dtype=np.int32))[0])


def encode_symbols(q: np.ndarray, plan: Plan) -> bytes:
    """Symbols C x h x w (int) -> range-coded bytes, as `plan` says (see :func:`choose_model`). Per channel the
    payload holds the floor index, a flag for custom weights, the weights' differences from the defaults if
    so, then the symbols' residuals wavefront by wavefront (each wavefront's escape offsets after it)."""
    probs, _ = tables()
    enc = constriction.stream.queue.RangeEncoder()
    C, h, w = q.shape
    for c, ch in enumerate(_channels(q, np.asarray(plan.weights, dtype=np.int64))):
        _encode_uniform(enc, int(plan.floors[c]), len(FLOORS))
        custom = not np.array_equal(ch.weights, DEFAULT_WEIGHTS)
        _encode_uniform(enc, int(custom), 2)
        if custom:
            _encode_residuals(enc, ch.weights - np.array(DEFAULT_WEIGHTS), _weight_probs())
        s_idx = _scale_index(ch.lga, plan.model, int(plan.params[c]), int(plan.floors[c]))
        for rows, cols in wavefronts(h, w):
            k = rows * w + cols
            _encode_residuals(enc, ch.r[k], probs[s_idx[k], ch.offset[k]])
    return enc.get_compressed().astype("<u4").tobytes()


def decode_symbols(data: bytes, shape: tuple[int, int, int], model: int, params: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_symbols` (``model`` and ``params`` come from the file header). Raises
    :class:`LatentkitError` if `data` is not a valid stream, whatever the damage: constriction signals an
    invalid stream with ``AssertionError`` or ``ValueError``/``RuntimeError``, and all of them end here."""
    try:
        return _decode_symbols(data, shape, model, params)
    except LatentkitError:
        raise
    except (AssertionError, ValueError, RuntimeError, OverflowError) as e:
        detail = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        raise LatentkitError(f"corrupt .latent payload: {detail}") from None


def _decode_symbols(data: bytes, shape: tuple[int, int, int], model: int, params: np.ndarray) -> np.ndarray:
    if not data:
        raise LatentkitError("corrupt .latent payload (empty)")
    if len(data) % 4:
        raise LatentkitError("corrupt .latent payload (length is not a whole number of words)")
    probs, _ = tables()
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    C, h, w = shape
    q = np.zeros(shape, dtype=np.int64)
    prev_err = None
    for c in range(C):
        floor = _decode_uniform(dec, len(FLOORS))
        weights = np.array(DEFAULT_WEIGHTS)
        if _decode_uniform(dec, 2):
            weights = weights + _decode_residuals(dec, _weight_probs())
        if np.any(weights < WEIGHT_MIN) or np.any(weights > WEIGHT_MAX):
            raise LatentkitError("corrupt .latent payload (predictor weight out of range)")
        qc, prev = q[c], q[c - 1] if c else None
        err = np.zeros((h, w), dtype=np.int64)
        for rows, cols in wavefronts(h, w):
            mu, offset = _predict(neighbours(qc, prev, rows, cols), weights)
            s_idx = _scale_index(lg(activity(err, prev_err, rows, cols)), model, int(params[c]), floor)
            v = _rounded(mu) + _decode_residuals(dec, probs[s_idx, offset])
            if np.abs(v).max() > MAX_SYMBOL:
                raise LatentkitError("corrupt .latent payload (symbol out of range)")
            qc[rows, cols] = v
            err[rows, cols] = np.abs((v << WEIGHT_SHIFT) - mu)
        prev_err = err
    if not dec.maybe_exhausted():
        raise LatentkitError("corrupt .latent payload (data left over after the last symbol)")
    return q
