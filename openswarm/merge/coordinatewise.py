"""Streaming per-coordinate merges: a kernel maps a (peers x coordinates) block to one row."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from openswarm.merge.inputs import Prepared
from openswarm.merge.numeric import acc_dtype, as_float, store

BLOCK = 1 << 18  # elements per (peers x coordinates) block

Kernel = Callable[[np.ndarray], np.ndarray]


def coordinatewise(prep: Prepared, kernel: Kernel) -> list[np.ndarray]:
    """Apply ``kernel`` to every tensor; see :func:`coordinatewise_tensor`."""
    return [coordinatewise_tensor(prep, t, kernel) for t in range(len(prep.specs))]


def coordinatewise_tensor(prep: Prepared, t: int, kernel: Kernel) -> np.ndarray:
    """Tensor ``t`` merged block by block: ``kernel`` gets the peers' values as rows."""
    spec = prep.specs[t]
    width = max(1, BLOCK // prep.count)
    out = np.empty(spec.size, spec.dtype.storage)
    block = np.empty((prep.count, min(width, spec.size)), acc_dtype(spec.dtype))
    for start in range(0, spec.size, width):
        stop = min(start + width, spec.size)
        rows = block[:, : stop - start]
        for i, flats in enumerate(prep.flats):
            as_float(flats[t][start:stop], spec.dtype, out=rows[i])
        store(out[start:stop], kernel(rows), spec.dtype)
    return out
