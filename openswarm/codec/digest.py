"""A canonical sha256 digest of a parameter set.

Definition (``u64`` = 8-byte little-endian unsigned integer)::

    sha256( b"openswarm-params-v1\\0" || u64(number of tensors) ||
            for each tensor, in the parameter set's order:
                u64(len(name)) || name (UTF-8) ||
                u64(len(dtype)) || dtype (ASCII canonical name: "float16", "bfloat16",
                                  "float32", "float64", "int8", "int16", "int32", "int64",
                                  "uint8", "bool") ||
                u64(ndim) || u64(dim) for each dim ||
                u64(nbytes) || the values' raw bytes, little-endian, C order )

It depends only on names, order, dtypes, shapes and values: not on numpy vs torch, memory
layout, device or host. Bool values hash as bytes 0/1.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from typing import Any

from openswarm.codec.errors import CodecError
from openswarm.codec.layout import as_byte_view, check_bool_bytes, read_layout, read_layout_file
from openswarm.codec.tensors import iter_raw, tensor_views

_MAGIC = b"openswarm-params-v1\x00"
_U64 = struct.Struct("<Q")
_FILE_CHUNK = 1 << 22


def _tensor_prefix(name: str, dtype: str, shape: tuple[int, ...], nbytes: int) -> bytes:
    name_bytes, dtype_bytes = name.encode("utf-8"), dtype.encode("ascii")
    parts = [_U64.pack(len(name_bytes)), name_bytes, _U64.pack(len(dtype_bytes)), dtype_bytes]
    parts += [_U64.pack(len(shape)), *(_U64.pack(dim) for dim in shape), _U64.pack(nbytes)]
    return b"".join(parts)


def digest(params: Mapping[str, Any]) -> str:
    """Canonical sha256 hex digest of a parameter set (definition in the module docstring)."""
    views = tensor_views(params)
    h = hashlib.sha256(_MAGIC + _U64.pack(len(views)))
    for view, raw in iter_raw(views):
        h.update(_tensor_prefix(view.name, view.dtype.name, view.shape, view.nbytes))
        h.update(raw)
    return h.hexdigest()


def digest_encoded(data: bytes | bytearray | memoryview) -> str:
    """:func:`digest` of the parameters that ``data`` encodes, hashed in place (no decode)."""
    view = as_byte_view(data)
    layout = read_layout(view)
    h = hashlib.sha256(_MAGIC + _U64.pack(len(layout.entries)))
    for entry in layout.entries:
        raw = view[layout.data_start + entry.begin : layout.data_start + entry.end]
        check_bool_bytes(entry, raw)
        h.update(_tensor_prefix(entry.name, entry.dtype.name, entry.shape, len(raw)))
        h.update(raw)
    return h.hexdigest()


def digest_file(path: str | os.PathLike[str]) -> str:
    """:func:`digest` of the parameters in an encoded file, read in bounded chunks."""
    with open(path, "rb") as handle:
        layout = read_layout_file(handle)
        h = hashlib.sha256(_MAGIC + _U64.pack(len(layout.entries)))
        for entry in layout.entries:
            size = entry.end - entry.begin
            h.update(_tensor_prefix(entry.name, entry.dtype.name, entry.shape, size))
            handle.seek(layout.data_start + entry.begin)
            while size:
                block = handle.read(min(size, _FILE_CHUNK))
                if not block:  # the file shrank after its size was read
                    raise CodecError(f"tensor {entry.name!r}: file ended early (truncated)")
                check_bool_bytes(entry, block)
                h.update(block)
                size -= len(block)
    return h.hexdigest()
