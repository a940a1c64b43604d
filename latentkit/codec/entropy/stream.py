"""The stream: plan a latent's coding (:func:`choose_model`) and write / read the range-coded payload
(``constriction``'s range coder), channel by channel, wavefront by wavefront.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import constriction
import numpy as np

from ...errors import LatentkitError
from ..quant import MAX_SYMBOL
from .context import (DEFAULT_WEIGHTS, FLOORS, MAX_MODEL, NEIGHBOURS, WEIGHT_MAX, WEIGHT_MIN, WEIGHT_SHIFT,
                      WEIGHT_TABLE, channels, gather_activity, gather_neighbours, padded, param_costs, predict,
                      rounded, scale_index, scale_table, wavefront_indices, wavefront_order)
from .tables import ALPHABET, EXACT, FIRST_ESCAPE, NUM_OFFSETS, escape_sizes, from_symbols, lg, tables, to_symbols

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
    chans = channels(q)
    costs = np.stack([param_costs(ch.cells(), range(MAX_MODEL + 1)) for ch in chans])  # C x M x F x P
    side = sum(ch.side_bits() for ch in chans)
    total = costs.min(axis=(2, 3)).sum(0) + side
    m = int(np.argmin(total))
    best = costs[:, m].reshape(len(chans), -1).argmin(1)
    floors, params = np.divmod(best, 256)
    return Plan(m, params.astype(np.uint8), floors, np.stack([ch.weights for ch in chans]), float(total[m]))


@lru_cache(maxsize=1)
def _coders() -> tuple:
    return constriction.stream.model.Categorical(perfect=False), constriction.stream.model.Uniform()


def _encode_residuals(enc, r: np.ndarray, probs: np.ndarray) -> None:
    fam, uni = _coders()
    sym, off, size = to_symbols(r)
    enc.encode(sym, fam, probs)
    esc = size > 0
    if esc.any():
        enc.encode(off[esc], uni, size[esc])


def _decode_residuals(dec, probs: np.ndarray, echo=None) -> np.ndarray:
    """Residuals decoded with probability rows `probs`, and written again to the encoder `echo` if given."""
    fam, uni = _coders()
    sym = dec.decode(fam, probs)
    if echo is not None:
        echo.encode(sym, fam, probs)
    if sym.max(initial=0) < FIRST_ESCAPE:  # no escapes (the common case)
        return sym.astype(np.int64) - (EXACT - 1)
    size = escape_sizes(sym)
    off = np.zeros(len(sym), dtype=np.int32)
    esc = size > 0
    off[esc] = dec.decode(uni, size[esc])
    if echo is not None:
        echo.encode(off[esc], uni, size[esc])
    return from_symbols(sym, off)


def _prob_rows() -> np.ndarray:
    """The probability tables as rows (NUM_SCALES * NUM_OFFSETS) x ALPHABET: table (s, i) is row s * NUM_OFFSETS + i."""
    return tables()[0].reshape(-1, ALPHABET)


def _weight_probs() -> np.ndarray:
    probs, _ = tables()
    return np.repeat(probs[WEIGHT_TABLE][None], len(NEIGHBOURS), axis=0)


def _encode_uniform(enc, value: int, size: int) -> None:
    enc.encode(np.array([value], dtype=np.int32), _coders()[1], np.array([size], dtype=np.int32))


def _decode_uniform(dec, size: int) -> int:
    return int(dec.decode(_coders()[1], np.array([size], dtype=np.int32))[0])


def _encode_side(enc, floor: int, weights: np.ndarray) -> None:
    """A channel's side information: its floor index, a flag for custom weights, their differences if so."""
    _encode_uniform(enc, floor, len(FLOORS))
    custom = not np.array_equal(weights, DEFAULT_WEIGHTS)
    _encode_uniform(enc, int(custom), 2)
    if custom:
        _encode_residuals(enc, weights - np.array(DEFAULT_WEIGHTS), _weight_probs())


def encode_symbols(q: np.ndarray, plan: Plan) -> bytes:
    """Symbols C x h x w (int) -> range-coded bytes, as `plan` says (see :func:`choose_model`). Per channel the
    payload holds the floor index, a flag for custom weights, the weights' differences from the defaults if
    so, then the symbols' residuals wavefront by wavefront (each wavefront's escape offsets after it)."""
    enc = constriction.stream.queue.RangeEncoder()
    fam, uni = _coders()
    C, h, w = q.shape
    order, ends = wavefront_order(h, w)
    for c, ch in enumerate(channels(q, np.asarray(plan.weights, dtype=np.int64))):
        _encode_side(enc, int(plan.floors[c]), ch.weights)
        s_idx = scale_index(ch.lga, plan.model, int(plan.params[c]), int(plan.floors[c]))
        probs = _prob_rows().take(s_idx[order] * NUM_OFFSETS + ch.offset[order], axis=0)
        sym, esc, size = ch.sym[order], ch.esc[order], ch.size[order]
        # the symbols run on in one call up to the end of each wavefront that has escapes, then those escapes
        start = 0
        for end in np.unique(ends[np.searchsorted(ends, np.flatnonzero(size), side="right")]):
            enc.encode(sym[start:end], fam, probs[start:end])
            has = np.flatnonzero(size[start:end]) + start
            enc.encode(esc[has], uni, size[has])
            start = end
        if start < len(sym):
            enc.encode(sym[start:], fam, probs[start:])
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
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    # everything decoded is written again, as encode_symbols writes it, to `echo`: the payload must be exactly
    # those bytes, which catches trailing or altered words that the range decoder's lookahead hides
    echo = constriction.stream.queue.RangeEncoder()
    prob_rows = _prob_rows()
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
        _encode_side(echo, floor, weights)
        # the plane and its errors beside the previous channel's, as the index functions read them (context.padded)
        empty = np.zeros((h, w), dtype=np.int64)
        qc, err = padded(empty, q[c - 1] if c else None), padded(empty, prev_err)
        lg_rows = scale_table(model, int(params[c]), floor) * NUM_OFFSETS  # each lg value's first table row
        for k, nbr_index, act_index in wavefront_indices(h, w):
            mu, offset = predict(gather_neighbours(qc, nbr_index), weights)
            row = lg_rows[lg(gather_activity(err, act_index))] + offset
            v = rounded(mu) + _decode_residuals(dec, prob_rows.take(row, axis=0), echo)  # take: faster than []
            if np.abs(v).max() > MAX_SYMBOL:
                raise LatentkitError("corrupt .latent payload (symbol out of range)")
            qc[k] = v
            err[k] = np.abs((v << WEIGHT_SHIFT) - mu)
        q[c] = qc[:h * w].reshape(h, w)
        prev_err = err[:h * w]
    if not dec.maybe_exhausted():
        raise LatentkitError("corrupt .latent payload (data left over after the last symbol)")
    if echo.get_compressed().astype("<u4").tobytes() != data:
        raise LatentkitError("corrupt .latent payload (not what the encoder writes for its symbols: trailing or "
                             "altered bytes)")
    return q
