"""Weighted coordinate-wise median."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from openswarm.merge.coordinatewise import coordinatewise
from openswarm.merge.inputs import Prepared, prepare
from openswarm.merge.network import sorted_lanes
from openswarm.merge.sums import exact

_HALF_TOLERANCE = 1e-12


def coordmedian(
    param_sets: Sequence[Mapping[str, Any]], weights: Sequence[float] | None = None
) -> dict[str, Any]:
    """Weighted coordinate-wise median.

    Rule, per coordinate, with values sorted ascending and W the total weight: the result
    is the smallest value whose cumulative weight reaches W/2; if that cumulative weight
    equals W/2 exactly (within 1e-12 W), the mean of that value and the next one. With
    equal weights this is the ordinary median (mean of the two middle values for an
    even count). Integers and bools follow ``numeric.store``; zero-weight peers are dropped;
    weights are capped at their lower median first (``Prepared.capped``).
    """
    return coordmedian_prepared(prepare(param_sets, weights))


def coordmedian_prepared(prep: Prepared) -> dict[str, Any]:
    """:func:`coordmedian` of validated inputs."""
    prep = prep.capped()
    w = prep.weights
    if prep.equal_weights():
        return prep.build(coordinatewise(prep, median_rows))
    return prep.build(coordinatewise(prep, lambda rows: weighted_median_rows(rows, w)))


def median_rows(rows: np.ndarray) -> np.ndarray:
    """Unweighted median of each column (``rows`` is used as scratch)."""
    count = rows.shape[0]
    mid = count // 2
    if count % 2:
        return sorted_lanes(rows, (mid,))[mid]
    lanes = sorted_lanes(rows, (mid - 1, mid))
    return 0.5 * lanes[mid - 1] + 0.5 * lanes[mid]


def weighted_median_rows(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted median of each column (the rule in :func:`coordmedian`)."""
    count, width = rows.shape
    if count == 1:
        return rows[0]
    order = np.argsort(rows, axis=0, kind="stable")  # ties in one order on every CPU
    values = np.take_along_axis(rows, order, axis=0)
    cumulative = np.cumsum(weights[order], axis=0)
    total = exact(weights)
    half, tol = 0.5 * total, _HALF_TOLERANCE * total
    first = np.argmax(cumulative >= half - tol, axis=0)
    cols = np.arange(width)
    low = values[first, cols]
    high = values[np.minimum(first + 1, count - 1), cols]
    at_half = np.abs(cumulative[first, cols] - half) <= tol
    return np.where(at_half, 0.5 * low + 0.5 * high, low)
