"""Weighted mean, the default merge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from openswarm.codec.arrays import numpy_bfloat16
from openswarm.codec.dtypes import DType
from openswarm.merge.errors import MergeInputError
from openswarm.merge.inputs import Prepared, prepare
from openswarm.merge.running_mean import Float64Sum, RunningMean, weight_scale


def mean(
    param_sets: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
    *,
    out: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Weighted mean ``sum(w_i * x_i) / sum(w_i)``, added up set by set in the given order
    (openswarm.merge.running_mean, which a leader streaming snapshots uses too): extra
    memory is about one parameter set for any peer count.

    Floats accumulate in float32 (16/32-bit) or float64; integers in float64, then round
    half to even; bools are True on a strict weighted majority. Every input is checked to
    be finite first; a NaN or infinity raises MergeInputError naming the peer and tensor.

    `out` (numpy inputs only): C-contiguous arrays of the inputs' names, shapes and dtypes
    (bfloat16 as ``ml_dtypes`` arrays or their uint16 bits) to write the result into, e.g.
    kept from one round to the next so that no fresh memory is touched; the returned arrays
    are views of them.
    """
    prep = prepare(param_sets, weights)
    raw = [1.0] * len(param_sets) if weights is None else [float(w) for w in weights]
    kept = [raw[i] for i in prep.peers]
    scale = weight_scale(kept)
    outputs = None if out is None else _flat_outputs(prep, out)
    running = RunningMean(prep.specs, scale, outputs)
    for flats, weight in zip(prep.flats, kept, strict=True):
        running.add(flats, weight)
    overflowed = running.finish()
    if overflowed:
        again = Float64Sum(prep.specs, overflowed, scale)
        for flats, weight in zip(prep.flats, kept, strict=True):
            again.add(flats, weight)
        again.finish(running.outputs, running.overflows)
    return prep.build(running.outputs)


def _flat_outputs(prep: Prepared, out: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    if prep.as_torch:
        raise MergeInputError("out= takes numpy arrays; merge torch tensors without it")
    flats = []
    for spec in prep.specs:
        target = out.get(spec.name)
        if (
            not isinstance(target, np.ndarray)
            or target.dtype not in (spec.dtype.storage, _held_as(spec.dtype))
            or target.size != spec.size
            or not target.flags.c_contiguous
            or not target.flags.writeable
        ):
            raise MergeInputError(
                f"out[{spec.name!r}] must be a writable C-contiguous {spec.dtype.name} array "
                f"of {spec.size} values"
            )
        flats.append(target.reshape(-1).view(spec.dtype.storage))
    return flats


def _held_as(dtype: DType) -> np.dtype:
    """The numpy dtype a decoded array of ``dtype`` has (``ml_dtypes`` bfloat16 for
    bfloat16, when installed; its raw storage, uint16, otherwise)."""
    if dtype.name != "bfloat16":
        return dtype.storage
    try:
        return numpy_bfloat16()
    except ImportError:
        return dtype.storage
