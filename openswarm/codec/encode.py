"""Encoding a parameter set as safetensors bytes, whole, in chunks or to a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from openswarm.codec.errors import CodecError
from openswarm.codec.finite import has_nonfinite
from openswarm.codec.header import build_header
from openswarm.codec.tensors import TensorSpec, TensorView, iter_raw, tensor_views

DEFAULT_CHUNK_SIZE = 1 << 20


def encode(params: Mapping[str, Any], *, require_finite: bool = False) -> bytes:
    """Safetensors bytes for ``params`` (numpy arrays or torch tensors), order kept.

    The result is built in one allocation from views of the tensors, so peak memory is
    the parameters plus the output. With ``require_finite``, NaN/inf raise CodecError.
    """
    views = _checked(params, require_finite)
    return b"".join([build_header(views), *(raw for _, raw in iter_raw(views))])


def allocate_encoded(specs: Sequence[TensorSpec]) -> tuple[bytearray, list[np.ndarray]]:
    """The encoding of tensors `specs` with their values still to be written: the buffer
    (header filled in) and each tensor's flat raw array, a view into it (bfloat16 as its
    uint16 bits). Writing a result straight into these encodes it without a copy."""
    header = build_header(specs)
    buffer = bytearray(len(header) + sum(spec.nbytes for spec in specs))
    buffer[: len(header)] = header
    flats, offset = [], len(header)
    for spec in specs:
        flats.append(np.frombuffer(buffer, spec.dtype.storage, spec.size, offset))
        offset += spec.nbytes
    return buffer, flats


def iter_encoded_chunks(
    params: Mapping[str, Any],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    require_finite: bool = False,
) -> Iterator[bytes]:
    """The bytes of :func:`encode` as chunks of exactly ``chunk_size`` (the last may be shorter).

    Validation happens on this call; the chunks are produced lazily, one tensor at a time.
    """
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise CodecError(f"chunk_size must be a positive int, got {chunk_size!r}")
    views = _checked(params, require_finite)
    return _chunks(views, chunk_size)


def encode_to_file(
    params: Mapping[str, Any], path: str | os.PathLike[str], *, require_finite: bool = False
) -> int:
    """Write the encoding to ``path`` atomically (temp file + rename); return its size."""
    views = _checked(params, require_finite)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            size = handle.write(build_header(views))
            for _, raw in iter_raw(views):
                size += handle.write(raw)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


def _checked(params: Mapping[str, Any], require_finite: bool) -> list[TensorView]:
    views = tensor_views(params)
    if require_finite:
        for view in views:
            if has_nonfinite(view.flat(), view.dtype):
                raise CodecError(f"tensor {view.name!r} contains NaN or infinite values")
    return views


def _chunks(views: list[TensorView], chunk_size: int) -> Iterator[bytes]:
    pending = bytearray()

    def pieces() -> Iterator[memoryview]:
        yield memoryview(build_header(views))
        for _, raw in iter_raw(views):
            yield raw

    for piece in pieces():
        while len(piece):
            if not pending and len(piece) >= chunk_size:
                yield bytes(piece[:chunk_size])
                piece = piece[chunk_size:]
                continue
            take = min(chunk_size - len(pending), len(piece))
            pending += piece[:take]
            piece = piece[take:]
            if len(pending) == chunk_size:
                yield bytes(pending)
                pending.clear()
    if pending:
        yield bytes(pending)
