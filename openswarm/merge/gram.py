"""The peers' Gram matrix over all float tensors, in one streaming pass.

Distances between peers, and norms of any affine combination of them, follow from
small K x K algebra, so Krum and Weiszfeld iterations never touch the data again.
Each block of coordinates is centred on one peer, the medoid of a sample of the block's
columns, before products are summed: that keeps the precision of small distances when a
minority of peers is far away from the rest (centring on the mean would not). Every sum
runs in a fixed order or exactly (sums.py), so the matrix has the same bits on every CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openswarm.merge.coordinatewise import BLOCK
from openswarm.merge.inputs import Prepared
from openswarm.merge.numeric import as_float
from openswarm.merge.sums import LANES, exact, exact_rows, in_order, lane_sums, quad


@dataclass(frozen=True)
class Gram:
    """``centered[i, j] = <x_i - m, x_j - m>``, ``cross[i] = <x_i - m, m>``, ``m_sq = <m, m>``."""

    centered: np.ndarray
    cross: np.ndarray
    m_sq: float

    def quad(self, coeffs: np.ndarray) -> float:
        """``||sum_i coeffs[i] x_i||^2`` for coefficients summing to 0."""
        return max(quad(coeffs, self.centered), 0.0)

    def norm_sq(self, coeffs: np.ndarray) -> float:
        """``||sum_i coeffs[i] x_i||^2`` for coefficients summing to 1."""
        value = self.m_sq + 2.0 * exact(coeffs * self.cross) + self.quad(coeffs)
        return max(value, 0.0)

    def pairwise_sq(self) -> np.ndarray:
        """Squared distances between peers."""
        diag = np.diag(self.centered)
        return np.maximum(diag[:, None] + diag[None, :] - 2.0 * self.centered, 0.0)


def gram(prep: Prepared) -> Gram:
    """The Gram data of all float tensors of the kept peers (float64 throughout)."""
    count = prep.count
    size = count + 1
    # Products of rows i and j >= i, row by row; partial sums in LANES lanes per pair.
    starts = np.concatenate([[0], np.cumsum(np.arange(size, 0, -1))])
    partial = np.zeros((int(starts[-1]), LANES))
    width = max(LANES, BLOCK // size // LANES * LANES)
    for t, spec in enumerate(prep.specs):
        if not spec.dtype.is_float:
            continue
        # Rows 0..K-1 hold the peers' values minus the centre, row K the centre itself.
        block = np.empty((size, min(width, spec.size)))
        for start in range(0, spec.size, width):
            stop = min(start + width, spec.size)
            rows = block[:, : stop - start]
            for i, flats in enumerate(prep.flats):
                as_float(flats[t][start:stop], spec.dtype, out=rows[i])
            rows[count] = rows[_medoid(rows[:count])]
            rows[:count] -= rows[count]
            for i in range(size):
                partial[starts[i] : starts[i + 1]] += lane_sums(rows[i] * rows[i:])
    sums = exact_rows(partial)
    total = np.empty((size, size))
    for i in range(size):
        total[i, i:] = total[i:, i] = sums[starts[i] : starts[i + 1]]
    return Gram(total[:count, :count], total[:count, count].copy(), float(total[count, count]))


def _medoid(rows: np.ndarray, samples: int = 256) -> int:
    """The row with the least total distance to the others, judged on sampled columns."""
    sample = np.ascontiguousarray(rows[:, :: max(1, rows.shape[1] // samples)])
    count = sample.shape[0]
    diff = sample[:, None, :] - sample[None, :, :]
    squares = lane_sums((diff * diff).reshape(count * count, -1))
    dist = np.sqrt(in_order(np.ascontiguousarray(squares.T)).reshape(count, count))
    return int(np.argmin(in_order(np.ascontiguousarray(dist.T))))
