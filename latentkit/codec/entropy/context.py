"""The context model: what a symbol's distribution depends on (neighbours, prediction, scale selection).

Each channel plane (h x w integer symbols ``q``) is coded in wavefronts ``d = 2 i + j`` (row i, column j): a
whole wavefront is coded in one batched coder call while every neighbour the model reads is already known.

**Prediction.** ``mu = sum_k w_k n_k / 64`` over the neighbours :data:`NEIGHBOURS` (ten causal ones in the
plane, among them the MED/LOCO-I median predictor, plus the previous channel's symbol at the same place; outside
the plane a neighbour falls back to a nearer one, see :func:`neighbours`) with integer weights ``w`` in
[-128, 127]. The encoder fits the weights per image and channel (least squares and least absolute deviations,
keeping whichever codes shorter, or the defaults) and sends them in the payload.

**Scale.** ``s = clip(floor(m * lg(a) / 8) + param_c - PARAM_BIAS, FLOORS[f_c], NUM_SCALES - 1)`` with the
causal activity ``a`` (:func:`activity`) of the neighbours' absolute prediction errors ``|64 q - 64 mu|`` and
``lg(a) = round(4 log2(a + 1))``. The encoder picks, by exact code length, the slope ``m`` in 0..15 and one
byte ``param_c`` per channel (both in the file header) and each channel's floor index ``f_c`` (in the payload):
sparse channels at low rates want very small scales, dense ones a floor.

Everything the decoder computes here is integer arithmetic; the weight fits and code-length estimates are the
encoder's alone.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ...errors import LatentkitError
from .tables import ALPHABET, MAX_RESIDUAL, NUM_LG, NUM_OFFSETS, NUM_SCALES, lg, tables, to_symbols

PARAM_BIAS = 128
#: lowest scale index a channel may use (its index travels in the payload, 2 bits)
FLOORS = (0, 4, 8, 12)
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


@lru_cache(maxsize=8)
def wavefronts(h: int, w: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The wavefronts ``2 i + j = d`` of an h x w plane, in coding order: list of (rows, cols). Empty ones (odd d
    in a plane one column wide) are left out."""
    out = []
    for d in range(2 * (h - 1) + w):
        i = np.arange(max(0, -(-(d - w + 1) // 2)), min(h - 1, d // 2) + 1)
        if len(i):
            out.append((i, d - 2 * i))
    return out


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every position of an h x w plane in raster order."""
    rows, cols = np.divmod(np.arange(h * w), w)
    return rows, cols


def neighbour_index(h: int, w: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Where :func:`neighbours` reads its inputs other than ``med`` (left, up, upleft, upright, left2, up2,
    up2right, up2left, upleft2, prev; 10 x n): flat indices into :func:`padded` planes, with the fallbacks
    resolved. They depend on the positions only, so a decoder computes them once per plane size
    (:func:`wavefront_indices`)."""
    zero = h * w
    hl, hu, hr = cols > 0, rows > 0, cols < w - 1
    r1, r2 = np.maximum(rows - 1, 0) * w, np.maximum(rows - 2, 0) * w
    c1, c2, cr = np.maximum(cols - 1, 0), np.maximum(cols - 2, 0), np.minimum(cols + 1, w - 1)
    up = np.where(hu, r1 + cols, zero)
    left = np.where(hl, rows * w + c1, up)
    up = np.where(hu, up, left)
    upleft = np.where(hl & hu, r1 + c1, up)
    upright = np.where(hu & hr, r1 + cr, up)
    left2 = np.where(cols > 1, rows * w + c2, left)
    up2 = np.where(rows > 1, r2 + cols, up)
    up2right = np.where((rows > 1) & hr, r2 + cr, up2)
    up2left = np.where((rows > 1) & hl, r2 + c1, up2)
    upleft2 = np.where(hu & (cols > 1), r1 + c2, upleft)
    prev = zero + 1 + rows * w + cols
    return np.stack([left, up, upleft, upright, left2, up2, up2right, up2left, upleft2, prev])


def activity_index(h: int, w: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Where :func:`activity` reads the errors (left, up, upleft, upright, left2, up2, prev; 7 x n): flat indices
    into :func:`padded` error planes; terms outside the plane read the zero (index h * w)."""
    zero = h * w
    hl, hu = cols > 0, rows > 0
    r1, c1 = np.maximum(rows - 1, 0) * w, np.maximum(cols - 1, 0)
    upright = np.where(hu & (cols < w - 1), r1 + np.minimum(cols + 1, w - 1), zero)
    return np.stack([np.where(hl, rows * w + c1, zero), np.where(hu, r1 + cols, zero),
                     np.where(hl & hu, r1 + c1, zero), upright,
                     np.where(cols > 1, rows * w + np.maximum(cols - 2, 0), zero),
                     np.where(rows > 1, np.maximum(rows - 2, 0) * w + cols, zero),
                     zero + 1 + rows * w + cols])


@lru_cache(maxsize=8)
def wavefront_indices(h: int, w: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each wavefront of an h x w plane (:func:`wavefronts`): (flat positions ``rows * w + cols``,
    :func:`neighbour_index`, :func:`activity_index`)."""
    return [(i * w + j, neighbour_index(h, w, i, j), activity_index(h, w, i, j)) for i, j in wavefronts(h, w)]


@lru_cache(maxsize=8)
def wavefront_order(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat positions of an h x w plane in coding order, the end of each wavefront in that order)."""
    fronts = [i * w + j for i, j in wavefronts(h, w)]
    return np.concatenate(fronts), np.cumsum([len(k) for k in fronts])


@lru_cache(maxsize=8)
def grid_indices(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole h x w plane in raster order: (:func:`neighbour_index`, :func:`activity_index`), computed once per
    plane size (the rate search estimates the same size ~80 times)."""
    rows, cols = grid(h, w)
    return neighbour_index(h, w, rows, cols), activity_index(h, w, rows, cols)


def padded(plane: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    """What the index functions index (int64, 2 h w + 1): the plane (h x w) flattened, one zero (for reads
    outside the plane), then the previous channel's plane flattened (zeros for the first channel, `prev` None)."""
    flat = plane.ravel()
    out = np.concatenate([flat, [0], np.zeros_like(flat) if prev is None else prev.ravel()])
    return out.astype(np.int64, copy=False)


def gather_neighbours(planes: np.ndarray, index: np.ndarray) -> np.ndarray:
    """:func:`neighbours` of :func:`padded` planes, read through `index` (:func:`neighbour_index` of the
    positions)."""
    v = planes[index]
    left, up, upleft = v[0], v[1], v[2]
    med = np.maximum(np.minimum(left, up), np.minimum(np.maximum(left, up), left + up - upleft))
    return np.concatenate([v[:6], med[None], v[6:]])


def neighbours(plane: np.ndarray, prev: np.ndarray | None, rows: np.ndarray, cols: np.ndarray,
               index: np.ndarray | None = None) -> np.ndarray:
    """The predictor's inputs (len(NEIGHBOURS) x n, int64) at positions (rows, cols) of a channel plane (h x w).

    Missing neighbours fall back: left -> up -> 0, up -> left, up-left and up-right -> up, left-left -> left,
    up-up -> up, up-up-left and up-up-right -> up-up, up-left-left -> up-left; ``prev`` (the previous
    channel's symbols, h x w) is 0 for the first channel. ``med`` is the median of left, up and
    left + up - up-left. ``index``: :func:`neighbour_index` of these positions, when the caller has it."""
    return gather_neighbours(padded(plane, prev), neighbour_index(*plane.shape, rows, cols) if index is None else index)


#: the weights of the terms :func:`activity_index` reads (left, up, upleft, upright, left2, up2, prev)
ACTIVITY_WEIGHTS = np.array([2, 2, 1, 1, 1, 1, 2], dtype=np.int64)


def gather_activity(errors: np.ndarray, index: np.ndarray) -> np.ndarray:
    """:func:`activity` of :func:`padded` error planes, read through `index` (:func:`activity_index` of the
    positions)."""
    return ACTIVITY_WEIGHTS @ errors[index]


def activity(err: np.ndarray, prev_err: np.ndarray | None, rows: np.ndarray, cols: np.ndarray,
             index: np.ndarray | None = None) -> np.ndarray:
    """Causal activity ``2|e_left| + 2|e_up| + |e_upleft| + |e_upright| + |e_left2| + |e_up2| + 2|e_prev|`` at
    (rows, cols) from the absolute prediction errors ``err`` of the plane and ``prev_err`` of the previous
    channel's (h x w each, units of 1/64 symbol; 0 where not coded yet; terms outside the plane count 0).
    ``index``: :func:`activity_index` of these positions, when the caller has it."""
    return gather_activity(padded(err, prev_err), activity_index(*err.shape, rows, cols) if index is None else index)


def predict(nbrs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu in units of 1/64 symbol, offset index) from neighbours (len(NEIGHBOURS) x n) and integer weights."""
    mu = np.asarray(weights, dtype=np.int64) @ nbrs
    # the offset index of the fraction mu - 64 rounded(mu) in [-32, 32): (mu + 32) mod 64 scaled to NUM_OFFSETS
    return mu, ((mu + (1 << (WEIGHT_SHIFT - 1))) & ((1 << WEIGHT_SHIFT) - 1)) * NUM_OFFSETS >> WEIGHT_SHIFT


def rounded(mu: np.ndarray) -> np.ndarray:
    """The prediction rounded to the nearest symbol (mu in units of 1/64 symbol)."""
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


class Channel:
    """One channel's coding plan, flattened raster order: residual symbols (alphabet index ``sym``, escape offset
    ``esc`` and escape size ``size``), offset indices, absolute prediction errors ``err`` and log-activities.
    ``prev_err``: the previous channel's ``err`` (None for the first channel)."""

    def __init__(self, q: np.ndarray, nbrs: np.ndarray, prev_err: np.ndarray | None, weights: np.ndarray):
        _, act_index = grid_indices(*q.shape)
        self.weights = weights
        mu, self.offset = predict(nbrs, weights)
        r = q.ravel() - rounded(mu)
        if np.abs(r).max(initial=0) > MAX_RESIDUAL:
            raise LatentkitError("latent symbols out of range: use a lower quality")
        self.sym, self.esc, self.size = to_symbols(r)
        self.err = np.abs((q.ravel() << WEIGHT_SHIFT) - mu)
        self.lga = lg(gather_activity(padded(self.err, prev_err), act_index))

    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The context histogram's non-zero cells: (lg activity, offset index x ALPHABET + symbol, count)."""
        width = NUM_OFFSETS * ALPHABET
        keys, counts = np.unique(self.lga * width + self.offset * ALPHABET + self.sym, return_counts=True)
        return keys // width, keys % width, counts

    def side_bits(self) -> float:
        """Bits outside the modelled symbols: escape offsets, the floor index and the weights."""
        return float(np.log2(self.size[self.size > 0]).sum()) + np.log2(len(FLOORS)) + _weight_bits(self.weights)


def scale_table(model: int, param: int, floor: int) -> np.ndarray:
    """:func:`scale_index` of every log-activity value (what a decoder looks up per channel)."""
    return scale_index(np.arange(NUM_LG), model, param, floor)


def scale_index(lga: np.ndarray, model: int, param: np.ndarray | int, floor: int) -> np.ndarray:
    """The table scale index of each position from its log-activity (see the module docstring)."""
    s = ((model * lga) >> 3) + (np.asarray(param) - PARAM_BIAS)
    return np.minimum(np.maximum(s, FLOORS[floor]), NUM_SCALES - 1)  # np.clip's checks cost more on small arrays


def param_costs(cells: tuple[np.ndarray, np.ndarray, np.ndarray], models: range | list[int]) -> np.ndarray:
    """Code length in bits (side bits excluded) of a context histogram (:meth:`Channel.cells`): models x floors
    x 256 params."""
    _, bits = tables()
    g_idx, k_idx, counts = cells
    groups, starts = np.unique(g_idx, return_index=True)
    # groups x scales, by elementwise sums (no BLAS: its threads stall on small products when cores are busy)
    per_scale = np.add.reduceat(bits.reshape(NUM_SCALES, -1)[:, k_idx].T * counts[:, None], starts, axis=0)
    flat, rows = per_scale.ravel(), (np.arange(len(groups)) * NUM_SCALES)[:, None]
    out = np.zeros((len(models), len(FLOORS), 256))
    for j, m in enumerate(models):
        # flat indices into per_scale (groups x params) with the lowest floor (0); a higher floor is the maximum
        # of those and its own scale index
        idx = scale_index(groups[:, None], m, np.arange(256)[None, :], 0) + rows
        for f, lowest in enumerate(FLOORS):
            out[j, f] = flat[np.maximum(idx, rows + lowest) if lowest else idx].sum(0)
    return out


def channels(q: np.ndarray, weights: np.ndarray | None = None) -> list[Channel]:
    """Coding plans of every channel; with `weights` None, each channel's weights are the cheapest of the
    default and the fitted ones (by the code length with model 8)."""
    out: list[Channel] = []
    nbr_index, _ = grid_indices(*q.shape[1:])
    for c in range(q.shape[0]):
        nbrs = gather_neighbours(padded(q[c], q[c - 1] if c else None), nbr_index)
        prev_err = out[-1].err if c else None
        if weights is not None:
            out.append(Channel(q[c], nbrs, prev_err, weights[c]))
            continue
        cands = [Channel(q[c], nbrs, prev_err, wts)
                 for wts in [np.array(DEFAULT_WEIGHTS)] + fit_weights(q[c], nbrs)]
        out.append(min(cands, key=lambda ch: param_costs(ch.cells(), [8]).min() + ch.side_bits()))
    return out


def channel_bits(q: np.ndarray, model: int = 8) -> float:
    """Estimated code length in bits of one channel's symbols (h x w) on its own (no previous channel), with
    least-squares weights, context `model` and the best floor and param: what the encoder would pay, within a few
    bytes (it may find slightly shorter codes). Fast enough for the encoder's rate-distortion search."""
    nbr_index, _ = grid_indices(*q.shape)
    nbrs = gather_neighbours(padded(q, None), nbr_index)
    ch = Channel(q, nbrs, None, fit_weights(q, nbrs, robust=False)[0])
    return float(param_costs(ch.cells(), [model]).min()) + ch.side_bits()
