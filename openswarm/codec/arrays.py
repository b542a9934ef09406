"""Numpy and torch values as flat numpy buffers, and back. Torch is imported only if in use."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import numpy as np

from openswarm.codec.dtypes import BY_NAME, SUPPORTED_NAMES, DType
from openswarm.codec.errors import CodecError


class UnsupportedValueError(ValueError):
    """A value that is not a numpy array or torch tensor of a supported dtype."""


def is_torch(value: object) -> bool:
    """True if ``value`` is a torch tensor (never imports torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


_BY_NUMPY = {np.dtype(d.name): d for d in BY_NAME.values() if d.name != "bfloat16"}


def describe(value: object) -> tuple[DType, tuple[int, ...]]:
    """The dtype and shape of a numpy array (or numpy scalar, as 0-d) or torch tensor."""
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        dtype = _BY_NUMPY.get(value.dtype)
        if dtype is not None:  # fast path: native byte order, common dtypes
            return dtype, value.shape
        name = value.dtype.name
    elif is_torch(value):
        name = str(value.dtype).removeprefix("torch.")  # type: ignore[attr-defined]
    else:
        raise UnsupportedValueError(
            f"expected a numpy array or torch tensor, got {type(value).__name__}"
        )
    dtype = BY_NAME.get(name)
    if dtype is None:
        raise UnsupportedValueError(
            f"unsupported dtype {name}; supported: {', '.join(SUPPORTED_NAMES)}"
        )
    return dtype, tuple(value.shape)  # type: ignore[attr-defined]


def flat_storage(value: Any, dtype: DType) -> np.ndarray:
    """A 1-D, C-ordered, native-endian numpy view of the raw values (copied only if needed).

    bfloat16 values come back as their ``uint16`` bit patterns.
    """
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        arr = value if value.dtype.isnative else value.astype(value.dtype.newbyteorder("="))
        flat = np.ravel(arr, order="C")
        return flat.view(dtype.storage) if dtype.name == "bfloat16" else flat
    tensor = value.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    tensor = tensor.contiguous().reshape(-1)
    if dtype.name == "bfloat16":
        torch = sys.modules["torch"]
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def little_endian_bytes(flat: np.ndarray) -> memoryview:
    """The raw little-endian bytes of a flat array from :func:`flat_storage`."""
    if flat.dtype.byteorder == ">" or (flat.dtype.byteorder == "=" and sys.byteorder == "big"):
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    return memoryview(flat.view(np.uint8))


def import_torch() -> Any:
    """Import torch, or raise ImportError with a clear message."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:  # pragma: no cover - torch is installed in the test env
        raise ImportError("torch is not installed; install openswarm[torch]") from exc


def numpy_bfloat16() -> np.dtype:
    """The ``ml_dtypes`` bfloat16 numpy dtype, or ImportError if ml_dtypes is missing."""
    ml_dtypes = importlib.import_module("ml_dtypes")
    return np.dtype(ml_dtypes.bfloat16)


def to_torch(value: Any) -> Any:
    """``value`` as a torch tensor, sharing its memory where it can; torch tensors unchanged.

    numpy arrays and scalars of every supported dtype convert exactly, ``ml_dtypes``
    bfloat16 included (its bits become ``torch.bfloat16``, which ``torch.from_numpy`` refuses);
    anything else raises CodecError.
    """
    if is_torch(value):
        return value
    try:
        dtype, shape = describe(value)
    except UnsupportedValueError as exc:
        raise CodecError(str(exc)) from None
    torch = import_torch()
    arr = np.asarray(value)
    if not (arr.flags.c_contiguous and arr.flags.writeable and arr.dtype.isnative):
        arr = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("="), copy=True)
    if dtype.name == "bfloat16":
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16).reshape(shape)
    return torch.from_numpy(arr)


def from_storage(flat: np.ndarray, shape: tuple[int, ...], dtype: DType, *, as_torch: bool) -> Any:
    """Wrap a flat storage array (not copied) as a numpy array or torch tensor of ``shape``.

    For numpy, bfloat16 needs ``ml_dtypes`` (ImportError otherwise).
    """
    arr = flat.reshape(shape)
    if as_torch:
        torch = import_torch()
        if dtype.name == "bfloat16":
            return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(arr)
    if dtype.name == "bfloat16":
        return arr.view(numpy_bfloat16())
    return arr
