"""Sums that give the same bits on every CPU, so every site computes the same merge.

NumPy's reductions along a contiguous axis, and BLAS products, choose how to accumulate by
the CPU they run on (NumPy dispatches on SIMD features; OpenBLAS picks its kernels at run
time), so their last bits differ between machines. Element-wise arithmetic does not: IEEE 754
rounds each operation exactly. The merges therefore sum in only two ways:

- element-wise accumulation in a fixed order, one slice after another (NumPy reduces a
  C-contiguous array over any axis but the last by adding whole slices in order;
  `tests/test_merge.py` checks that it still does);
- ``math.fsum``, which is exact, hence independent of any order.

Transcendental functions (exp, log) also differ between CPUs and are not used; sqrt is exact.
"""

from __future__ import annotations

import math

import numpy as np

#: Each row is folded into this many partial sums, LANES columns at a time.
LANES = 64


def in_order(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """The sum over `axis` (not the last) of a C-contiguous float64 array, adding one slice
    after another in order."""
    assert values.flags.c_contiguous and values.dtype == np.float64 and axis < values.ndim - 1
    return np.add.reduce(values, axis=axis)


def lane_sums(values: np.ndarray) -> np.ndarray:
    """Each row of a 2-D array folded into LANES partial sums (as float64): lane j adds the
    columns j, j + LANES, j + 2 LANES, … in that order."""
    rows, width = values.shape
    whole = width - width % LANES
    lanes = np.zeros((rows, LANES), np.float64)
    if whole:
        blocks = np.ascontiguousarray(values[:, :whole], np.float64)
        lanes += in_order(blocks.reshape(rows, whole // LANES, LANES), axis=1)
    lanes[:, : width - whole] += values[:, whole:]
    return lanes


def exact(values: np.ndarray) -> float:
    """The sum of all values, exactly rounded."""
    return math.fsum(np.asarray(values, np.float64).ravel().tolist())


def exact_rows(values: np.ndarray) -> np.ndarray:
    """The sum of each row of a 2-D array, exactly rounded."""
    return np.array([math.fsum(row) for row in np.asarray(values, np.float64).tolist()])


def quad(coeffs: np.ndarray, matrix: np.ndarray) -> float:
    """``coeffs @ matrix @ coeffs``, summed exactly."""
    return exact(coeffs[:, None] * matrix * coeffs[None, :])
