"""Detecting NaN and infinity in raw float buffers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from openswarm.codec.dtypes import DType
from openswarm.codec.errors import CodecError
from openswarm.codec.tensors import tensor_views

_CHUNK = 1 << 18
_BF16_EXPONENT = np.uint16(0x7F80)


def has_nonfinite(flat: np.ndarray, dtype: DType) -> bool:
    """True if a flat storage array (see ``flat_storage``) holds a NaN or infinity."""
    if not dtype.is_float or flat.size == 0:
        return False
    # One BLAS pass: any NaN/inf makes x.x non-finite. A non-finite dot can also
    # mean overflow of large finite values, so that case is confirmed exactly below.
    if dtype.name in ("float32", "float64"):
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.dot(flat, flat)):
                return False
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK]
        if dtype.name == "bfloat16":
            bad = np.any(np.bitwise_and(part, _BF16_EXPONENT) == _BF16_EXPONENT)
        else:
            bad = not np.isfinite(part).all()
        if bad:
            return True
    return False


def check_finite(params: Mapping[str, Any]) -> None:
    """Raise CodecError naming the first tensor that holds a NaN or infinity."""
    for view in tensor_views(params):
        if has_nonfinite(view.flat(), view.dtype):
            raise CodecError(f"tensor {view.name!r} contains NaN or infinite values")
