"""What a parameter set must look like to be merged with, or loaded into, another."""

from __future__ import annotations

from typing import Any

import numpy as np

Params = dict[str, Any]


def structure(params: Params) -> Params:
    """Zero-size stand-ins with the names, shapes and dtypes of `params`."""
    return {
        name: np.lib.stride_tricks.as_strided(
            np.zeros(1, dtype=value.dtype), shape=np.shape(value), strides=(0,) * np.ndim(value)
        )
        for name, value in params.items()
    }


def mismatch(reference: Params, params: Params) -> str | None:
    """Why `params` cannot be merged with `reference`, or None if it can."""
    missing = [n for n in reference if n not in params]
    extra = [n for n in params if n not in reference]
    if missing or extra:
        return f"tensor names differ (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, ref in reference.items():
        got = params[name]
        if tuple(np.shape(got)) != tuple(np.shape(ref)):
            return f"tensor {name!r} has shape {tuple(np.shape(got))}, expected {np.shape(ref)}"
        if str(got.dtype) != str(ref.dtype):
            return f"tensor {name!r} has dtype {got.dtype}, expected {ref.dtype}"
    return None
