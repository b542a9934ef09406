"""Float views of raw values, and casting results back (integer and bool rules)."""

from __future__ import annotations

import math

import numpy as np

from openswarm.codec.dtypes import DType

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def all_finite(values: np.ndarray) -> bool:
    """Whether a float result holds no NaN or infinity (one BLAS pass: x.x is non-finite iff
    some x is, or on overflow, which is then confirmed exactly)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return math.isfinite(np.dot(values, values)) or bool(np.isfinite(values).all())


def acc_dtype(dtype: DType) -> np.dtype:
    """The dtype arithmetic runs in: float32 for 16/32-bit floats, else float64."""
    return _F32 if dtype.name in ("float16", "bfloat16", "float32") else _F64


def as_float(raw: np.ndarray, dtype: DType, out: np.ndarray | None = None) -> np.ndarray:
    """Raw values as ``acc_dtype`` floats: ``raw`` itself if already so, else ``out`` or new."""
    if dtype.name == "bfloat16":
        values = np.left_shift(raw.astype(np.uint32), 16).view(np.float32)
    elif out is None and raw.dtype == acc_dtype(dtype):
        return raw
    else:
        values = raw
    if out is None:
        return values.astype(acc_dtype(dtype), copy=False)
    np.copyto(out, values, casting="unsafe")
    return out


def store(target: np.ndarray, values: np.ndarray, dtype: DType) -> None:
    """Write float results into raw storage.

    Floats: round to nearest (even); integers: round half to even, then cast; bools: True
    where the result is > 0.5 (for mean and median that is a strict weighted majority).
    """
    if dtype.name == "bfloat16":
        target[...] = bfloat16_bits(values)
    elif dtype.is_float:
        np.copyto(target, values, casting="unsafe")
    elif dtype.name == "bool":
        np.greater(values, 0.5, out=target)
    else:
        np.copyto(target, np.rint(values), casting="unsafe")


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns of finite floats, rounded to nearest even (as torch does)."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return ((bits + rounding) >> np.uint32(16)).astype(np.uint16)
