"""Writing and checking safetensors headers.

Layout: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON (padded with
spaces to a multiple of 8), then the raw tensor data. The JSON maps each name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data start)
and ``"__metadata__"`` to string pairs; the tensor order is kept in ``ORDER_KEY``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openswarm.codec.dtypes import BY_CODE, DType
from openswarm.codec.errors import CodecError
from openswarm.codec.limits import (
    check_data_offset,
    check_name,
    check_shape,
    check_tensor_count,
    shown,
)
from openswarm.codec.tensors import RESERVED_NAME, TensorSpec

ORDER_KEY = "openswarm.order"
MAX_HEADER_BYTES = 100_000_000
_LEN = struct.Struct("<Q")


@dataclass(frozen=True)
class Entry:
    """One tensor as the header describes it."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Layout:
    """A checked header: tensors in their original order, and where the data starts."""

    entries: tuple[Entry, ...]
    data_start: int


def build_header(views: Sequence[TensorSpec]) -> bytes:
    """The length prefix and JSON header for tensors stored back to back in this order."""
    header: dict[str, Any] = {
        RESERVED_NAME: {ORDER_KEY: json.dumps([v.name for v in views], ensure_ascii=True)}
    }
    offset = 0
    for view in views:
        end = offset + view.nbytes
        header[view.name] = {
            "dtype": view.dtype.code,
            "shape": list(view.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    text = json.dumps(header, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    text += b" " * (-len(text) % 8)
    return _LEN.pack(len(text)) + text


def header_length(prefix: bytes) -> int:
    """The JSON header length from the first 8 bytes, checked against the limit."""
    if len(prefix) < 8:
        raise CodecError(f"truncated data: {len(prefix)} bytes, need at least 8 for the header")
    (length,) = _LEN.unpack(prefix[:8])
    if length > MAX_HEADER_BYTES:
        raise CodecError(f"header length {length} exceeds the {MAX_HEADER_BYTES}-byte limit")
    return length


def parse_header(raw: bytes, total_size: int) -> Layout:
    """Check a JSON header against the encoding's total size; return the tensor layout."""
    data_start = 8 + len(raw)
    if data_start > total_size:
        raise CodecError(
            f"truncated data: header needs {len(raw)} bytes, {total_size - 8} are present"
        )
    obj = _load_json(raw)
    if not isinstance(obj, dict):
        raise CodecError("corrupt header: the JSON header is not an object")
    metadata = obj.pop(RESERVED_NAME, None)
    check_tensor_count(len(obj))
    entries = [_entry(name, spec) for name, spec in obj.items()]
    _check_offsets(entries, total_size - data_start)
    return Layout(tuple(_ordered(entries, metadata)), data_start)


def _load_json(raw: bytes) -> Any:
    # ValueError also covers integers too long for Python's int-from-text limit.
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CodecError(f"corrupt header: not UTF-8 JSON ({shown(str(exc))})") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CodecError(f"corrupt header: duplicate key {shown(key)}")
        out[key] = value
    return out


def _entry(name: str, spec: Any) -> Entry:
    check_name(name)
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise CodecError(
            f"corrupt header: tensor {shown(name)} needs exactly dtype, shape and data_offsets"
        )
    dtype = BY_CODE.get(spec["dtype"]) if isinstance(spec["dtype"], str) else None
    if dtype is None:
        raise CodecError(f"tensor {shown(name)}: unsupported dtype {shown(spec['dtype'])}")
    shape, offsets = spec["shape"], spec["data_offsets"]
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise CodecError(f"tensor {shown(name)}: shape {shown(shape)} is not a list of counts")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise CodecError(f"tensor {shown(name)}: data_offsets {shown(offsets)} is not [begin, end]")
    count = check_shape(name, tuple(shape))
    begin, end = offsets
    check_data_offset(name, begin)
    check_data_offset(name, end)
    if end - begin != count * dtype.itemsize:
        raise CodecError(
            f"tensor {shown(name)}: data_offsets span {end - begin} bytes but shape "
            f"{shown(shape)} of {dtype.name} needs {count * dtype.itemsize}"
        )
    return Entry(name, dtype, tuple(shape), begin, end)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_offsets(entries: list[Entry], data_size: int) -> None:
    position = 0
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        if entry.begin != position:
            raise CodecError(
                f"tensor {shown(entry.name)}: data starts at {entry.begin}, expected {position} "
                "(tensors must be stored back to back)"
            )
        position = entry.end
    if position != data_size:
        what = "truncated data" if position > data_size else "trailing bytes"
        raise CodecError(f"{what}: header describes {position} data bytes, {data_size} present")


def _ordered(entries: list[Entry], metadata: Any) -> list[Entry]:
    by_offset = sorted(entries, key=lambda e: (e.begin, e.end))
    if metadata is None:
        return by_offset
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CodecError("corrupt header: __metadata__ must map strings to strings")
    if ORDER_KEY not in metadata:
        return by_offset
    try:
        order = json.loads(metadata[ORDER_KEY])
    except (ValueError, RecursionError):
        order = None
    by_name = {e.name: e for e in entries}
    if (
        not isinstance(order, list)
        or not all(isinstance(name, str) for name in order)
        or len(order) != len(by_name)
        or set(order) != set(by_name)
    ):
        raise CodecError(f"corrupt header: {ORDER_KEY} does not list exactly the tensors")
    return [by_name[name] for name in order]
