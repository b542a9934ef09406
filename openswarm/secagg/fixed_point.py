"""Fixed-point encoding of float updates into the group Z_{2^64} (numpy uint64, wrapping).

A value v becomes round(clip(v, bound) * scale * 2**FRACTION_BITS) as a two's-complement
integer. Masked sums are taken modulo 2**64; the limits below keep every honest sum inside the
signed range (MAX_PARTIES * MAX_BOUND * 2**FRACTION_BITS <= 2**62), so decoding never sees a wrap.
This module does no cryptography and draws no random numbers.
"""

from __future__ import annotations

import numpy as np

from openswarm.secagg.errors import SecAggError

FRACTION_BITS = 32
MAX_BOUND = 2.0**20
MAX_PARTIES = 1024

_ONE = float(2**FRACTION_BITS)


def encode(values: np.ndarray, bound: float, scale: float = 1.0) -> np.ndarray:
    """Clip to [-bound, bound] (NaN -> 0, +-inf -> +-bound), scale, and encode as flat uint64."""
    if not 0.0 < bound <= MAX_BOUND:
        raise SecAggError(
            f"clip bound {bound!r} is out of range: choose a bound in (0, {MAX_BOUND:g}]"
        )
    if not 0.0 <= scale <= 1.0:
        raise SecAggError(
            f"weight share {scale!r} is out of range: scale each participant's weight into [0, 1]"
        )
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise SecAggError(
            f"cannot encode an array of dtype {array.dtype}: pass real (float or integer) values"
        )
    flat = np.nan_to_num(array.astype(np.float64).ravel(), nan=0.0, posinf=bound, neginf=-bound)
    np.clip(flat, -bound, bound, out=flat)
    flat *= scale * _ONE
    np.rint(flat, out=flat)
    return flat.astype(np.int64).view(np.uint64)


def decode(total: np.ndarray) -> np.ndarray:
    """Decode a uint64 (sum of) encoding(s) back to float64 values."""
    array = np.asarray(total)
    if array.dtype != np.uint64:
        raise SecAggError(f"cannot decode dtype {array.dtype}: pass the uint64 masked sum")
    return array.view(np.int64).astype(np.float64) / _ONE


def clipped_count(values: np.ndarray, bound: float) -> int:
    """Count entries outside [-bound, bound] or not finite (what encode changes)."""
    array = np.asarray(values, dtype=np.float64)
    kept = np.isfinite(array) & (np.abs(array) <= bound)
    return int(array.size - np.count_nonzero(kept))


def max_error(parties: int) -> float:
    """Worst-case absolute rounding error of a decoded sum of `parties` encoded terms.

    Each term is rounded to the nearest multiple of 2**-FRACTION_BITS, an error of at most half
    a step. Converting the decoded total to float64 adds float64's own relative rounding (2**-53)
    for totals above 2**21, which this bound does not count.
    """
    return parties * 2.0 ** -(FRACTION_BITS + 1)


def _check_pair(total: np.ndarray, term: np.ndarray) -> None:
    if total.dtype != np.uint64 or term.dtype != np.uint64:
        raise SecAggError(
            f"wrapping arithmetic needs uint64 arrays, got {total.dtype} and {term.dtype}: "
            "encode the values first"
        )
    if total.shape != term.shape:
        raise SecAggError(
            f"cannot combine vectors of shapes {total.shape} and {term.shape}: "
            "every participant must encode the same number of values"
        )


def wrapping_add(total: np.ndarray, term: np.ndarray) -> np.ndarray:
    """Add term into total in place, modulo 2**64; returns total."""
    _check_pair(total, term)
    return np.add(total, term, out=total)


def wrapping_sub(total: np.ndarray, term: np.ndarray) -> np.ndarray:
    """Subtract term from total in place, modulo 2**64; returns total."""
    _check_pair(total, term)
    return np.subtract(total, term, out=total)
