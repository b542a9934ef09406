"""Reading and checking the layout of encoded bytes or an encoded file."""

from __future__ import annotations

import os
from typing import Any, BinaryIO

import numpy as np

from openswarm.codec.errors import CodecError
from openswarm.codec.header import Entry, Layout, header_length, parse_header


def as_byte_view(data: Any) -> memoryview:
    """A flat byte view of ``data`` (bytes, bytearray, memoryview ...), or CodecError."""
    try:
        view = memoryview(data)
    except TypeError:
        raise CodecError(f"expected bytes, got {type(data).__name__}") from None
    if not view.c_contiguous:
        raise CodecError("expected contiguous bytes, got a strided buffer")
    if view.ndim == 1 and view.itemsize == 1:
        return view
    try:
        return view.cast("B")
    except (TypeError, ValueError) as exc:
        raise CodecError(f"expected bytes, got a buffer of format {view.format!r}: {exc}") from None


def read_layout(view: memoryview) -> Layout:
    """The checked layout of encoded bytes."""
    length = header_length(bytes(view[:8]))
    return parse_header(_exactly(bytes(view[8 : 8 + length]), length), len(view))


def read_layout_file(handle: BinaryIO) -> Layout:
    """The checked layout of an open encoded file."""
    size = os.fstat(handle.fileno()).st_size
    handle.seek(0)
    length = header_length(handle.read(8))
    return parse_header(_exactly(handle.read(length), length), size)


def _exactly(raw: bytes, length: int) -> bytes:
    if len(raw) < length:
        raise CodecError(f"truncated data: header needs {length} bytes, {len(raw)} are present")
    return raw


def check_bool_bytes(entry: Entry, raw: Any) -> None:
    """Refuse BOOL tensors whose bytes are not 0 or 1."""
    if entry.dtype.name != "bool" or entry.end == entry.begin or len(raw) == 0:
        return
    if np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise CodecError(f"tensor {entry.name!r}: BOOL data holds bytes other than 0 and 1")
