"""Krum and multi-Krum (Blanchard et al., 2017)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from openswarm.merge.combine import combine
from openswarm.merge.errors import MergeInputError
from openswarm.merge.gram import gram
from openswarm.merge.inputs import Prepared, prepare
from openswarm.merge.sums import exact_rows


def krum(
    param_sets: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
    f: int | None = None,
) -> dict[str, Any]:
    """The parameter set with the lowest Krum score (a copy), ties to the lowest index.

    A set's score is the sum of squared distances (over all float tensors) to its
    ``K - f - 2`` nearest other sets, K counting peers of positive weight; K >= 2f + 3
    is required. ``f`` defaults to the largest allowed, ``(K - 3) // 2``. Weights only
    drop zero-weight peers; they do not change scores.
    """
    return krum_prepared(prepare(param_sets, weights), f)


def krum_prepared(prep: Prepared, f: int | None = None) -> dict[str, Any]:
    """:func:`krum` of validated inputs."""
    scores = krum_scores(prep, _byzantine(prep.count, f))
    best = int(np.argmin(scores))
    return prep.build([flat.copy() for flat in prep.flats[best]])


def multi_krum(
    param_sets: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
    f: int | None = None,
    m: int | None = None,
) -> dict[str, Any]:
    """Weighted mean of the ``m`` sets with the lowest Krum scores (default ``m = K - f``).

    Scores and ``f`` as in :func:`krum`; ties go to the lower index. Weights are capped at
    their lower median (over all peers, ``Prepared.capped``) before the chosen are averaged.
    """
    return multi_krum_prepared(prepare(param_sets, weights), f, m)


def multi_krum_prepared(
    prep: Prepared, f: int | None = None, m: int | None = None
) -> dict[str, Any]:
    """:func:`multi_krum` of validated inputs."""
    prep = prep.capped()
    f = _byzantine(prep.count, f)
    m = prep.count - f if m is None else m
    if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= prep.count:
        raise MergeInputError(f"multi_krum: m must be an int in [1, {prep.count}], got {m!r}")
    chosen = np.argsort(krum_scores(prep, f), kind="stable")[:m]
    best = prep.select(sorted(chosen.tolist()))
    return best.build(combine(best, best.weights))


def krum_scores(prep: Prepared, f: int) -> np.ndarray:
    """Each peer's sum of squared distances to its ``K - f - 2`` nearest other peers."""
    dist = gram(prep).pairwise_sq()
    np.fill_diagonal(dist, np.inf)
    nearest = prep.count - f - 2
    return exact_rows(np.sort(dist, axis=1)[:, :nearest])


def _byzantine(count: int, f: int | None) -> int:
    if f is None:
        if count < 3:
            raise MergeInputError(
                f"krum needs at least 3 parameter sets with positive weight, got {count}"
            )
        return (count - 3) // 2
    if not isinstance(f, int) or isinstance(f, bool) or f < 0:
        raise MergeInputError(f"krum: f must be an int >= 0, got {f!r}")
    if count < 2 * f + 3:
        raise MergeInputError(
            f"krum with f={f} needs at least 2f+3 = {2 * f + 3} parameter sets with "
            f"positive weight, got {count}"
        )
    return f
