"""The dtypes a parameter set may hold, and their names in numpy, torch and safetensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    """One supported dtype.

    ``name`` is the canonical name (used in digests); ``code`` the safetensors name;
    ``storage`` the numpy dtype that holds its raw values (``uint16`` for bfloat16).
    """

    name: str
    code: str
    storage: np.dtype
    torch_name: str
    is_float: bool

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return self.storage.itemsize


_TABLE = (
    DType("float16", "F16", np.dtype(np.float16), "float16", True),
    DType("bfloat16", "BF16", np.dtype(np.uint16), "bfloat16", True),
    DType("float32", "F32", np.dtype(np.float32), "float32", True),
    DType("float64", "F64", np.dtype(np.float64), "float64", True),
    DType("int8", "I8", np.dtype(np.int8), "int8", False),
    DType("int16", "I16", np.dtype(np.int16), "int16", False),
    DType("int32", "I32", np.dtype(np.int32), "int32", False),
    DType("int64", "I64", np.dtype(np.int64), "int64", False),
    DType("uint8", "U8", np.dtype(np.uint8), "uint8", False),
    DType("bool", "BOOL", np.dtype(np.bool_), "bool", False),
)

BY_NAME: dict[str, DType] = {d.name: d for d in _TABLE}
BY_CODE: dict[str, DType] = {d.code: d for d in _TABLE}
SUPPORTED_NAMES: tuple[str, ...] = tuple(d.name for d in _TABLE)
