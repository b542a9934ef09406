"""Weighted coordinate-wise trimmed mean."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from openswarm.merge.coordinatewise import coordinatewise
from openswarm.merge.errors import MergeInputError
from openswarm.merge.inputs import Prepared, prepare
from openswarm.merge.network import sorted_lanes


def trimmed_mean(
    param_sets: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
    beta: float = 0.1,
) -> dict[str, Any]:
    """Coordinate-wise trimmed mean.

    With K peers of positive weight, ``ceil(beta * K)`` values are dropped from each end of
    every coordinate, at most ``(K - 1) // 2`` so that one or two remain (``0 <= beta <=
    0.5``; beta = 0.5 is the median). Rounding up means any beta > 0 drops at least the
    extremes, so one hostile peer among three or more never reaches the result unless its
    value lies among the honest ones. The result is the weighted mean of the rest, each
    value with its peer's weight, weights capped at their lower median first
    (``Prepared.capped``). Equal values are ordered by ascending weight, which keeps the
    result independent of peer order.
    """
    return trimmed_mean_prepared(prepare(param_sets, weights), beta)


def trimmed_mean_prepared(prep: Prepared, beta: float = 0.1) -> dict[str, Any]:
    """:func:`trimmed_mean` of validated inputs."""
    if not isinstance(beta, int | float) or not 0 <= beta <= 0.5:
        raise MergeInputError(f"beta must be a number in [0, 0.5], got {beta!r}")
    prep = prep.capped()
    cut = trimmed_count(beta, prep.count)
    if prep.equal_weights():
        return prep.build(coordinatewise(prep, lambda rows: trimmed_rows(rows, cut)))
    prep = prep.select(np.argsort(prep.weights, kind="stable").tolist())
    w = prep.weights
    return prep.build(coordinatewise(prep, lambda rows: weighted_trimmed_rows(rows, w, cut)))


def trimmed_count(beta: float, count: int) -> int:
    """How many values trimmed_mean drops from each end of `count` (see its rule)."""
    wanted = math.ceil(beta * count - 1e-9)  # 0.1 * 30 is 3.0000000000000004, not above 3
    if beta > 0:
        wanted = max(wanted, 1)
    return max(0, min(wanted, (count - 1) // 2))


def trimmed_rows(rows: np.ndarray, cut: int) -> np.ndarray:
    """Unweighted mean of each column without its ``cut`` lowest and highest values.

    ``rows`` is used as scratch.
    """
    count = rows.shape[0]
    kept = range(cut, count - cut)
    lanes = sorted_lanes(rows, tuple(kept)) if cut else list(rows)
    total = lanes[cut].copy()
    for i in kept[1:]:
        total += lanes[i]
    total *= 1.0 / len(kept)
    return total


def weighted_trimmed_rows(rows: np.ndarray, weights: np.ndarray, cut: int) -> np.ndarray:
    """Weighted mean of each column without its ``cut`` lowest and highest values.

    Rows must be ordered by ascending weight (ties between equal values go by row).
    """
    order = np.argsort(rows, axis=0, kind="stable")[cut : rows.shape[0] - cut]
    kept = np.take_along_axis(rows, order, axis=0)
    kept_weights = weights[order]
    return _row_sum(kept * kept_weights) / _row_sum(kept_weights)


def _row_sum(rows: np.ndarray) -> np.ndarray:
    """The rows added one after another (numpy's `sum(axis=0)` adds a single column
    pairwise instead, so a value's sum would depend on how many columns share its block,
    and a sharded merge cuts blocks elsewhere than a leader's)."""
    total = rows[0].copy()
    for row in rows[1:]:
        total += row
    return total
