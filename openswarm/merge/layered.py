"""Merging layer by layer: each peer's tensors loaded one at a time, on demand.

The merge methods walk the tensors in order, and within one tensor every peer (the Gram
matrix behind geomedian and Krum, the coordinate-wise kernels, the weighted sums). Given
`LazyTensors` instead of arrays, a peer's tensor is loaded when first asked for and dropped
when the next one is, so a merge holds about K times the largest tensor of input, not K
whole models (HPE's ``SL_RAM_INTENSIVE=False``), and gives the very same bits: the
arithmetic and its order do not change, only where the inputs come from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from openswarm.codec.tensors import TensorSpec
from openswarm.merge.inputs import Prepared
from openswarm.merge.registry import merge_prepared
from openswarm.merge.sums import exact

Loader = Callable[[int], np.ndarray]
"""loader(t): tensor t of one peer as a flat raw array (see openswarm.codec flat_storage)."""


class LazyTensors(Sequence[np.ndarray]):
    """One peer's flat tensors, loaded by `loader` when asked for; only the last kept."""

    def __init__(self, count: int, loader: Loader) -> None:
        self._count, self._loader = count, loader
        self._index: int | None = None
        self._array: np.ndarray | None = None
        self.loads = 0  # how many times a tensor was loaded

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[np.ndarray]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        index %= self._count
        if index != self._index:
            self._array = None  # drop the one held before loading the next
            self._array = self._loader(index)
            self._index = index
            self.loads += 1
        assert self._array is not None
        return self._array

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(self._count))


def merge_layered(
    specs: Sequence[TensorSpec],
    loaders: Sequence[Loader],
    weights: Sequence[float],
    method: str,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge the peers whose tensors `loaders` give (in order; all checked to fit `specs`
    and to be finite already) with `method`, as `openswarm.merge.merge` would on the whole
    sets, without holding them: numpy results, in `specs` order."""
    w = np.asarray(weights, np.float64)
    kept = [i for i in range(len(loaders)) if w[i] > 0]
    prep = Prepared(
        specs=tuple(specs),
        flats=tuple(LazyTensors(len(specs), loaders[i]) for i in kept),
        weights=w[kept] / exact(w[kept]),
        peers=tuple(kept),
        template={},
        as_torch=False,
    )
    return merge_prepared(prep, method, **(options or {}))


__all__ = ["LazyTensors", "Loader", "merge_layered"]
