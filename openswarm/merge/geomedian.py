"""Weighted geometric median by Weiszfeld's algorithm with the Vardi-Zhang correction."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from openswarm.merge.combine import combine_tensor
from openswarm.merge.coordinatewise import coordinatewise_tensor
from openswarm.merge.errors import MergeInputError
from openswarm.merge.gram import Gram, gram
from openswarm.merge.inputs import Prepared, prepare
from openswarm.merge.median import weighted_median_rows
from openswarm.merge.sums import exact, quad

COINCIDENCE = 1e-10  # estimate "is" a peer within this fraction of the peers' spread


@dataclass(frozen=True)
class GeomedianResult:
    """The merged parameters and how the iteration ended.

    ``final_step`` is the last step's length relative to the estimate's norm.
    """

    params: dict[str, Any]
    iterations: int
    converged: bool
    final_step: float


def geomedian_with_info(
    param_sets: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> GeomedianResult:
    """Weighted geometric median of the float tensors taken together as one vector.

    If a peer is itself the geometric median (its weight outweighs the others' unit
    pulls) it is returned exactly, after 0 iterations. Otherwise Weiszfeld's iteration
    starts at the weighted mean and stops when a step is at most ``tol`` times the
    estimate's norm (converged) or after ``max_iter`` steps. When the estimate coincides
    with a peer (distance <= 1e-10 of the peers' RMS spread) the Vardi-Zhang rule is
    used instead of dividing by zero: the peer is kept if optimal, else the step is
    damped. Integer and bool tensors take the weighted
    coordinate-wise median (the 1-D geometric median). Zero-weight peers are dropped;
    weights are capped at their lower median first (``Prepared.capped``).
    """
    return geomedian_prepared(prepare(param_sets, weights), tol, max_iter)


def geomedian_prepared(prep: Prepared, tol: float = 1e-6, max_iter: int = 100) -> GeomedianResult:
    """:func:`geomedian_with_info` of validated inputs."""
    if not (isinstance(tol, int | float) and math.isfinite(tol) and tol > 0):
        raise MergeInputError(f"tol must be a positive finite number, got {tol!r}")
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 0:
        raise MergeInputError(f"max_iter must be an int >= 0, got {max_iter!r}")
    prep = prep.capped()
    w = prep.weights
    if prep.count == 1:
        coeffs, iterations, converged, step = w, 0, True, 0.0
    else:
        coeffs, iterations, converged, step = weiszfeld(gram(prep), w, tol, max_iter)
    outputs = []
    for t, spec in enumerate(prep.specs):
        if spec.dtype.is_float:
            outputs.append(combine_tensor(prep, t, coeffs))
        else:
            outputs.append(
                coordinatewise_tensor(prep, t, lambda rows: weighted_median_rows(rows, w))
            )
    return GeomedianResult(prep.build(outputs), iterations, converged, step)


def geomedian(
    param_sets: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> dict[str, Any]:
    """The parameters of :func:`geomedian_with_info`."""
    return geomedian_with_info(param_sets, weights, tol=tol, max_iter=max_iter).params


def weiszfeld(
    g: Gram, weights: np.ndarray, tol: float, max_iter: int
) -> tuple[np.ndarray, int, bool, float]:
    """Weiszfeld on the estimate's peer coefficients: (coeffs, iterations, converged, step)."""
    count = len(weights)
    spread = math.sqrt(max(exact(np.diag(g.centered)), 0.0) / count)
    coeffs = weights.copy()
    if spread == 0.0:
        return coeffs, 0, True, 0.0
    eye = np.eye(count)
    between = np.sqrt(g.pairwise_sq())
    for k in range(count):
        if _peer_is_optimal(g, weights, k, between[k], COINCIDENCE * spread):
            return eye[k], 0, True, 0.0
    step = math.inf
    for iteration in range(1, max_iter + 1):
        offsets = coeffs[None, :] - eye  # row j: estimate - x_j
        dist = np.sqrt(np.maximum([quad(row, g.centered) for row in offsets], 0.0))
        near = dist <= COINCIDENCE * spread
        pull = np.where(near, 0.0, weights / np.where(near, 1.0, dist))
        pulled = exact(pull)
        target = pull / pulled
        if near.any():
            # Vardi-Zhang: at a peer, move only if the others' pull beats its weight.
            residual = math.sqrt(g.quad(pull - pulled * coeffs))
            own = exact(weights[near])
            if residual <= own:
                return coeffs, iteration, True, 0.0
            damp = own / residual
            target = (1.0 - damp) * target + damp * coeffs
        move = math.sqrt(g.quad(target - coeffs))
        norm = math.sqrt(g.norm_sq(target))
        coeffs = target
        step = move / norm if norm > 0 else (0.0 if move == 0 else math.inf)
        if move <= tol * norm:
            return coeffs, iteration, True, step
    return coeffs, max_iter, False, step


def _peer_is_optimal(g: Gram, weights: np.ndarray, k: int, dist: np.ndarray, eps: float) -> bool:
    """Whether peer ``k`` is the geometric median (``dist``: its distances to the peers;
    peers within ``eps`` count as ``k``).

    True iff ``||sum_{i != k} w_i (x_i - x_k) / ||x_i - x_k|| || < w_k`` (strictly, with
    a 1e-9 margin: at equality, e.g. two equal-weight peers, a whole segment is optimal
    and Weiszfeld's answer from the weighted mean is the symmetric choice).
    """
    same = dist <= eps
    pull = np.where(same, 0.0, weights / np.where(same, 1.0, dist))
    pull[k] = -exact(pull)
    return math.sqrt(g.quad(pull)) < exact(weights[same]) * (1.0 - 1e-9)
