"""Weighted mean, the default merge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openswarm.merge.combine import combine
from openswarm.merge.inputs import prepare


def mean(
    param_sets: Sequence[Mapping[str, Any]], weights: Sequence[float] | None = None
) -> dict[str, Any]:
    """Weighted mean, streamed: extra memory is about one parameter set for any peer count.

    Floats accumulate in float32 (16/32-bit) or float64; integers in float64, then round
    half to even; bools are True on a strict weighted majority. The finiteness of the
    peers taking part is checked within the same pass over the data (zero-weight peers
    beforehand); a NaN or infinity raises MergeInputError naming the peer and tensor.
    """
    prep = prepare(param_sets, weights, check_finite="dropped")
    return prep.build(combine(prep, prep.weights))
