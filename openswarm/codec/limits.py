"""Bounds on what an encoding may describe, checked on encode and on decode.

The bounds keep every header a peer can send inside what numpy, torch and the digest's
8-byte integers can hold, so hostile bytes end in CodecError and never in another error.
"""

from __future__ import annotations

import reprlib
from typing import Any

from openswarm.codec.errors import CodecError

MAX_TENSORS = 100_000
"""Most tensors in one parameter set."""

MAX_NAME_BYTES = 1_024
"""Longest tensor name, in UTF-8 bytes."""

MAX_RANK = 32
"""Most dimensions of one tensor (numpy allows 64, torch fewer on some builds)."""

MAX_DIM = 2**48 - 1
"""Largest single dimension."""

MAX_ELEMENTS = 2**48
"""Largest product of a tensor's non-zero dimensions (numpy refuses far larger ones)."""

MAX_DATA_BYTES = 2**48
"""Largest data section, and so largest data offset, of one encoding."""

_SHORT = reprlib.Repr()
_SHORT.maxstring = 80
_SHORT.maxother = 80
_SHORT.maxlist = 8
_SHORT.maxdict = 4
_SHORT.maxlevel = 3


def shown(value: Any) -> str:
    """A short repr for error messages: hostile names and values can be megabytes long."""
    return _SHORT.repr(value)


def check_tensor_count(count: int) -> None:
    """Refuse more than MAX_TENSORS tensors."""
    if count > MAX_TENSORS:
        raise CodecError(f"{count} tensors exceed the limit of {MAX_TENSORS} (MAX_TENSORS)")


def check_name(name: Any) -> str:
    """The name if it is a string of at most MAX_NAME_BYTES UTF-8 bytes; CodecError if not."""
    if not isinstance(name, str):
        raise CodecError(f"tensor names must be strings, got {shown(name)} ({type(name).__name__})")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise CodecError(f"tensor name {shown(name)} is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise CodecError(
            f"tensor name {shown(name)} is {size} UTF-8 bytes, over the limit of "
            f"{MAX_NAME_BYTES} (MAX_NAME_BYTES)"
        )
    return name


def check_shape(name: str, shape: tuple[int, ...]) -> int:
    """The element count of a shape of counts, after checking rank, dims and extent."""
    if len(shape) > MAX_RANK:
        raise CodecError(
            f"tensor {shown(name)}: rank {len(shape)} exceeds the limit of {MAX_RANK} (MAX_RANK)"
        )
    extent, count = 1, 1
    for dim in shape:
        if dim > MAX_DIM:
            raise CodecError(
                f"tensor {shown(name)}: dimension {dim} exceeds the limit of {MAX_DIM} (MAX_DIM)"
            )
        extent *= max(dim, 1)
        count *= dim
        if extent > MAX_ELEMENTS:
            raise CodecError(
                f"tensor {shown(name)}: shape {shown(list(shape))} spans more than "
                f"{MAX_ELEMENTS} elements (MAX_ELEMENTS)"
            )
    return count


def check_data_offset(name: str, offset: int) -> None:
    """Refuse a data offset beyond MAX_DATA_BYTES."""
    if offset > MAX_DATA_BYTES:
        raise CodecError(
            f"tensor {shown(name)}: data offset {offset} exceeds the limit of "
            f"{MAX_DATA_BYTES} bytes (MAX_DATA_BYTES)"
        )
