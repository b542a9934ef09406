"""The weighted mean as a running sum: parameter sets are added one at a time, in order.

The definition (what `mean` computes, and what a leader streaming snapshots computes as
they arrive) is ``sum_i(w_i * x_i) / sum_i(w_i)``, summed element-wise in the order the
sets are added, in the accumulation dtype (`acc_dtype`), with every ``w_i`` scaled by one
power of two (`weight_scale`; the same bits for any power except where products fall to
subnormals or overflow, so whoever must match another's sum uses the same scale: a round's
leader and auditors take it from all of the round's weights) and the total summed exactly. A set
is added whole before the next, so one that turns out bad before it is added never touches
the sum, and holding the sum costs one output set (plus float32 accumulators for 16-bit
floats and float64 ones for integers and bools) whatever the number of sets.

A float value whose result is not finite although every input was (an intermediate sum
overflowed) is summed again in float64 (`Float64Sum`, from the same sets in the same order):
`finish` reports the tensors that hold such values, and only those values are replaced, so
a value's result never depends on the others of its tensor (a sharded merge sums parts of
a tensor apart, node/shard_merge.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from openswarm.codec.tensors import TensorSpec
from openswarm.merge.numeric import acc_dtype, all_finite, as_float, store

CHUNK = 1 << 16


def weight_scale(weights: Sequence[float]) -> float:
    """The power of two that brings the largest weight into [1, 2)."""
    top = max(weights)
    return 2.0 ** -math.floor(math.log2(top)) if top > 0 else 1.0


class RunningMean:
    """``sum(w_i * x_i) / sum(w_i)`` of flat raw tensors described by `specs`, written
    into `outputs` (flat raw arrays; fresh ones if None). `scale`: see `weight_scale`, of
    weights at least as large as any added (one fixed power of two for the whole sum)."""

    def __init__(self, specs: Sequence[TensorSpec], scale: float,
                 outputs: Sequence[np.ndarray] | None = None) -> None:  # fmt: skip
        self.specs = tuple(specs)
        self.outputs = (
            list(outputs)
            if outputs is not None
            else [np.empty(spec.size, spec.dtype.storage) for spec in self.specs]
        )
        accs = [acc_dtype(spec.dtype) for spec in self.specs]
        self._acc = [
            out if out.dtype == acc else np.empty(spec.size, acc)
            for spec, out, acc in zip(self.specs, self.outputs, accs, strict=True)
        ]
        self._scale = scale
        self._weights: list[float] = []
        self.overflows: dict[int, np.ndarray] = {}  # tensor -> where its sum overflowed

    @property
    def count(self) -> int:
        """How many sets were added."""
        return len(self._weights)

    def add(self, flats: Sequence[np.ndarray], weight: float) -> None:
        """Add one set (flat raw tensors in `specs` order, all finite) with `weight` > 0."""
        w = weight * self._scale
        first = not self._weights
        for spec, flat, acc in zip(self.specs, flats, self._acc, strict=True):
            tmp = np.empty(min(CHUNK, spec.size), acc.dtype)
            factor = acc.dtype.type(w)
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                for start in range(0, spec.size, CHUNK):
                    stop = min(start + CHUNK, spec.size)
                    values = as_float(flat[start:stop], spec.dtype)
                    if first:
                        np.multiply(values, factor, out=acc[start:stop])
                    else:
                        part = tmp[: stop - start]
                        np.multiply(values, factor, out=part)
                        np.add(acc[start:stop], part, out=acc[start:stop])
        self._weights.append(w)

    def finish(self) -> list[int]:
        """Divide by the total weight and store; returns the float tensors (by index) with
        values that overflowed (where: `overflows`), which `Float64Sum` writes again."""
        total = math.fsum(self._weights)
        overflowed = []
        for t, (spec, acc, out) in enumerate(zip(self.specs, self._acc, self.outputs,
                                                 strict=True)):  # fmt: skip
            divisor = acc.dtype.type(total)
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                for start in range(0, spec.size, CHUNK):
                    stop = min(start + CHUNK, spec.size)
                    np.divide(acc[start:stop], divisor, out=acc[start:stop])
            if spec.dtype.is_float and not all_finite(acc):
                overflowed.append(t)
                self.overflows[t] = ~np.isfinite(acc)
            if acc is not out:
                with np.errstate(over="ignore", invalid="ignore"):
                    store(out, acc, spec.dtype)
        return overflowed


class Float64Sum:
    """The tensors `indices` of `specs` that overflowed in `RunningMean`, summed again in
    float64 from the same sets, added in the same order with the same weights and scale."""

    def __init__(self, specs: Sequence[TensorSpec], indices: Sequence[int], scale: float) -> None:
        self.specs, self.indices, self._scale = tuple(specs), list(indices), scale
        self._acc = {t: np.zeros(self.specs[t].size, np.float64) for t in self.indices}
        self._weights: list[float] = []

    def add(self, flats: Sequence[np.ndarray], weight: float) -> None:
        """Add one set (all its flat raw tensors, in `specs` order)."""
        w = weight * self._scale
        for t, acc in self._acc.items():
            spec = self.specs[t]
            for start in range(0, spec.size, CHUNK):
                stop = min(start + CHUNK, spec.size)
                acc[start:stop] += as_float(flats[t][start:stop], spec.dtype).astype(np.float64) * w
        self._weights.append(w)

    def finish(self, outputs: Sequence[np.ndarray], where: Mapping[int, np.ndarray]) -> None:
        """Divide by the total weight and store into `outputs` (all tensors' flat arrays),
        at the values `where` says (`RunningMean.overflows`)."""
        total = math.fsum(self._weights)
        for t, acc in self._acc.items():
            np.divide(acc, total, out=acc)
            mask = where[t]
            part = np.empty(int(mask.sum()), outputs[t].dtype)
            store(part, acc[mask], self.specs[t].dtype)
            outputs[t][mask] = part


__all__ = ["Float64Sum", "RunningMean", "weight_scale"]
