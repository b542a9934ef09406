"""Checking a parameter set and viewing its tensors as flat buffers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from openswarm.codec.arrays import (
    UnsupportedValueError,
    describe,
    flat_storage,
    little_endian_bytes,
)
from openswarm.codec.dtypes import DType
from openswarm.codec.errors import CodecError
from openswarm.codec.limits import check_name, check_shape, check_tensor_count, shown

RESERVED_NAME = "__metadata__"


@dataclass(frozen=True)
class TensorSpec:
    """What one named tensor of a parameter set is: its name, codec dtype and shape. The
    one description the codec, the merge methods and the peer's checks share."""

    name: str
    dtype: DType
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of values."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        """Bytes of raw data."""
        return self.size * self.dtype.itemsize


@dataclass(frozen=True)
class TensorView(TensorSpec):
    """A `TensorSpec` with its value; ``flat()`` gives the raw values."""

    value: Any

    def flat(self) -> np.ndarray:
        """Flat, C-ordered, native-endian raw values (a view when the layout allows)."""
        return flat_storage(self.value, self.dtype)


def spec_of(name: str, value: Any) -> TensorSpec:
    """The `TensorSpec` of `value` (UnsupportedValueError for what the codec cannot hold)."""
    dtype, shape = describe(value)
    return TensorSpec(name, dtype, shape)


def structure(params: Mapping[str, Any]) -> dict[str, TensorSpec]:
    """Each tensor's `TensorSpec`, in order (CodecError for a value the codec cannot hold)."""
    try:
        return {name: spec_of(name, value) for name, value in params.items()}
    except UnsupportedValueError as exc:
        raise CodecError(str(exc)) from None


def tensor_views(params: Mapping[str, Any]) -> list[TensorView]:
    """Validate a parameter set and describe its tensors in order (no data is copied)."""
    if not isinstance(params, Mapping):
        raise CodecError(f"parameters must be a mapping of name -> array, got {type(params)}")
    check_tensor_count(len(params))
    views = []
    for name, value in params.items():
        check_name(name)
        if name == RESERVED_NAME:
            raise CodecError(f"tensor name {RESERVED_NAME!r} is reserved by safetensors")
        try:
            dtype, shape = describe(value)
        except UnsupportedValueError as exc:
            raise CodecError(f"tensor {shown(name)}: {exc}") from None
        check_shape(name, shape)
        views.append(TensorView(name, dtype, shape, value))
    return views


def iter_raw(views: list[TensorView]) -> Iterator[tuple[TensorView, memoryview]]:
    """Each tensor with its little-endian raw bytes, materialised one tensor at a time."""
    for view in views:
        yield view, little_endian_bytes(view.flat())
