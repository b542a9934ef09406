"""Decoding safetensors bytes or files into numpy arrays or torch tensors."""

from __future__ import annotations

import mmap
import os
import sys
from typing import Any

import numpy as np

from openswarm.codec.arrays import from_storage, import_torch, numpy_bfloat16
from openswarm.codec.errors import CodecError
from openswarm.codec.header import Entry, Layout
from openswarm.codec.layout import as_byte_view, check_bool_bytes, read_layout, read_layout_file

_ALIGN = 64  # where each decoded tensor starts in the block they share
_MAPPED_BYTES = 1 << 20  # arrays this large get memory of their own from the system


def fresh_array(count: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised array; a large one in memory mapped for it alone, which goes back to
    the system the moment the array is dropped (malloc would keep a freed block of a few
    megabytes in the heap, so models read and dropped every round would pile up there)."""
    nbytes = count * dtype.itemsize
    if nbytes < _MAPPED_BYTES:
        return np.empty(count, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype, count)


def decode(
    data: bytes | bytearray | memoryview, *, as_torch: bool = False, copy: bool = True
) -> dict[str, Any]:
    """Tensors from safetensors bytes, in their original order (one copy of the data).

    With ``copy=False`` (numpy only) the arrays are views of ``data``, read-only if it is
    (no copy: for reading a model once, e.g. into a merge, while ``data`` is kept).

    bfloat16 rule: with ``as_torch`` it decodes exactly to ``torch.bfloat16``; as numpy it
    needs the ``ml_dtypes`` package and otherwise raises CodecError.
    """
    if as_torch and not copy:
        raise CodecError("copy=False decodes to numpy views; decode torch tensors with a copy")
    view = as_byte_view(data)
    layout = read_layout(view)
    _check_backend(layout, as_torch)
    # The copies share one block (each tensor aligned), so a large model is one allocation
    # that goes back to the system as a whole once its tensors are dropped.
    offsets, total = [], 0
    for entry in layout.entries:
        offsets.append(total)
        total += -(-(entry.end - entry.begin) // _ALIGN) * _ALIGN
    block = fresh_array(total, np.dtype(np.uint8)) if copy and sys.byteorder == "little" else None
    out: dict[str, Any] = {}
    for entry, offset in zip(layout.entries, offsets, strict=True):
        start = layout.data_start + entry.begin
        raw = view[start : layout.data_start + entry.end]
        check_bool_bytes(entry, raw)
        if block is not None:
            target = block[offset : offset + len(raw)]
            target[:] = np.frombuffer(raw, np.uint8)
            flat = target.view(entry.dtype.storage)
        else:
            flat = np.frombuffer(raw, dtype=entry.dtype.storage.newbyteorder("<"))
            if copy or not flat.dtype.isnative:
                flat = flat.astype(entry.dtype.storage)
        out[entry.name] = _wrap(flat, entry, as_torch)
    return out


def decode_file(path: str | os.PathLike[str], *, as_torch: bool = False) -> dict[str, Any]:
    """Tensors from a file written by ``encode_to_file``, read straight into their arrays."""
    with EncodedFile(path) as encoded:
        _check_backend(encoded.layout, as_torch)
        return {
            entry.name: _wrap(encoded.flat(t), entry, as_torch)
            for t, entry in enumerate(encoded.layout.entries)
        }


class EncodedFile:
    """An encoded file whose tensors are read one at a time (its layout checked on open),
    e.g. to merge models layer by layer without holding them."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self.layout = read_layout_file(self._handle)
        except BaseException:
            self._handle.close()
            raise

    def flat(self, index: int) -> np.ndarray:
        """Tensor `index`'s raw values as a fresh flat array (bfloat16 as uint16 bits)."""
        entry = self.layout.entries[index]
        flat = fresh_array((entry.end - entry.begin) // entry.dtype.itemsize, entry.dtype.storage)
        self._handle.seek(self.layout.data_start + entry.begin)
        _read_exactly(self._handle, memoryview(flat.view(np.uint8)), entry)
        check_bool_bytes(entry, flat.view(np.uint8))
        if sys.byteorder == "big":  # pragma: no cover - little-endian hosts only in CI
            flat.byteswap(inplace=True)
        return flat

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> EncodedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_backend(layout: Layout, as_torch: bool) -> None:
    if as_torch:
        try:
            import_torch()
        except ImportError as exc:
            raise CodecError(f"as_torch=True needs torch: {exc}") from None
        return
    for entry in layout.entries:
        if entry.dtype.name == "bfloat16":
            try:
                numpy_bfloat16()
            except ImportError:
                raise CodecError(
                    f"tensor {entry.name!r} is bfloat16, which numpy cannot hold without "
                    "the ml_dtypes package: install ml_dtypes or decode with as_torch=True"
                ) from None
            return


def _read_exactly(handle: Any, target: memoryview, entry: Entry) -> None:
    done = 0
    while done < len(target):
        got = handle.readinto(target[done:])
        if not got:
            raise CodecError(f"tensor {entry.name!r}: file ended early (truncated)")
        done += got


def _wrap(flat: np.ndarray, entry: Entry, as_torch: bool) -> Any:
    return from_storage(flat, entry.shape, entry.dtype, as_torch=as_torch)
