"""Handing freed memory back to the system after a model has moved.

A transfer moves a model through many buffers of about a megabyte (gRPC's messages and
the slices it queues); glibc's malloc keeps such freed blocks in the process's heap, up to
about a model's size per transfer in flight. Once a large fetch or a round is over nothing
of it is in use, so the peer asks malloc to return it (`malloc_trim`); without glibc this
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_freed_memory() -> None:
    """Return the heap's free memory to the system, where the C library can (glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def spilled(data: bytes | bytearray | memoryview, folder: Path | None = None) -> memoryview:
    """`data` moved to a file of `folder` (None: the system's temp folder), as a read-only
    view of it mapped back: the bytes stay at hand while the memory they took is freed (the
    file, unlinked at once, goes with the last view of it)."""
    handle, name = tempfile.mkstemp(prefix="openswarm-spill-", dir=folder)
    try:
        with os.fdopen(handle, "w+b") as file:
            file.write(data)
            file.flush()
            if not len(data):
                return memoryview(b"")
            return memoryview(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
    finally:
        os.unlink(name)
