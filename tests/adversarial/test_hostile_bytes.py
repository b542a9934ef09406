"""Hostile encodings: whatever bytes a peer serves, the codec answers only with CodecError."""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openswarm.codec import (
    MAX_DIM,
    MAX_NAME_BYTES,
    MAX_RANK,
    MAX_TENSORS,
    CodecError,
    decode,
    decode_file,
    digest,
    digest_encoded,
    digest_file,
    encode,
)

PARAMS = {
    "w": np.arange(6, dtype=np.float32).reshape(2, 3),
    "step": np.asarray(7, dtype=np.int64),
    "mask": np.array([True, False, True]),
    "empty": np.zeros((0, 5), dtype=np.uint8),
}
VALID = encode(PARAMS)
READERS: tuple[Callable[[Any], Any], ...] = (
    decode,
    lambda data: decode(data, as_torch=True),
    digest_encoded,
)


def _raw(header_text: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header_text)) + header_text + body


def _blob(header: dict[str, Any], body: bytes = b"") -> bytes:
    return _raw(json.dumps(header).encode(), body)


def _one(shape: Any, offsets: Any, dtype: str = "F32", name: str = "w") -> bytes:
    spec = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
    size = offsets[1] if isinstance(offsets, list) and len(offsets) == 2 else 0
    body = b"\x00" * size if isinstance(size, int) and 0 <= size < 1 << 16 else b""
    return _blob({name: spec}, body)


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def assert_refused(data: Any, pattern: str, tmp_path: Path | None = None) -> None:
    """Every reader of bytes (and of files, given a folder) refuses with CodecError only."""
    for read in READERS:
        with pytest.raises(CodecError, match=pattern):
            read(data)
    if tmp_path is not None:
        path = tmp_path / "hostile.st"
        path.write_bytes(data)
        for read_file in (decode_file, digest_file):
            with pytest.raises(CodecError, match=pattern):
                read_file(path)


MANY = {
    f"t{i}": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]} for i in range(MAX_TENSORS + 1)
}
DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_INT = "9" * 5_000


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        pytest.param(_one([1] * 65, [0, 4]), r"tensor 'w': rank 65 .*MAX_RANK", id="65-dims"),
        pytest.param(_one([0] * 65, [0, 0]), r"tensor 'w': rank 65 .*MAX_RANK", id="65-zero-dims"),
        pytest.param(_one([1] * (MAX_RANK + 1), [0, 4]), "MAX_RANK", id="one-over-max-rank"),
        pytest.param(_one([0, 2**64], [0, 0]), r"tensor 'w': dimension .*MAX_DIM", id="dim-2**64"),
        pytest.param(_one([2**64], [0, 0]), "MAX_DIM", id="lone-dim-2**64"),
        pytest.param(_one([0, MAX_DIM + 1], [0, 0]), "MAX_DIM", id="dim-over-max"),
        pytest.param(_one([2**40, 2**40, 0], [0, 0]), "MAX_ELEMENTS", id="extent-overflow"),
        pytest.param(_one([2**24] * 8 + [0], [0, 0]), "MAX_ELEMENTS", id="many-big-dims"),
        pytest.param(_one([-1], [0, 0]), "not a list of counts", id="negative-dim"),
        pytest.param(_one([1.5], [0, 4]), "not a list of counts", id="float-dim"),
        pytest.param(_one(["2"], [0, 8]), "not a list of counts", id="string-dim"),
        pytest.param(_one([None], [0, 4]), "not a list of counts", id="null-dim"),
        pytest.param(_one({"a": 1}, [0, 4]), "not a list of counts", id="shape-object"),
        pytest.param(_one(2, [0, 8]), "not a list of counts", id="shape-int"),
        pytest.param(_one([1], [2**70, 2**70 + 4]), "MAX_DATA_BYTES", id="offset-overflow"),
        pytest.param(_one([1], [0, 2**64]), "MAX_DATA_BYTES", id="end-overflow"),
        pytest.param(_one([1], [-4, 0]), r"not \[begin, end\]", id="negative-offset"),
        pytest.param(_one([1], [4, 0]), "span", id="reversed-offsets"),
        pytest.param(_one([1], [0, 4.0]), r"not \[begin, end\]", id="float-offset"),
        pytest.param(_one([1], [0, 4, 8]), r"not \[begin, end\]", id="three-offsets"),
        pytest.param(_one([1], [0, 4], dtype=["F32"]), "unsupported dtype", id="list-dtype"),
        pytest.param(_one([1], [0, 4], name="x" * 1_025), "MAX_NAME_BYTES", id="long-name"),
        pytest.param(_one([1], [0, 4], name="é" * 513), "MAX_NAME_BYTES", id="long-utf8-name"),
        pytest.param(_one([1], [0, 4], name="\ud800"), "not valid UTF-8", id="surrogate-name"),
        pytest.param(_blob(MANY), "MAX_TENSORS", id="too-many-tensors"),
        pytest.param(
            _blob(
                {"__metadata__": {"openswarm.order": "[1]"}, **json.loads(_one([0], [0, 0])[8:])}
            ),
            "order",
            id="non-string-name-in-order",
        ),
        pytest.param(
            _blob({"__metadata__": {"openswarm.order": f"[{HUGE_INT}]"}}), "order", id="huge-order"
        ),
        pytest.param(
            _blob({"__metadata__": {"openswarm.order": DEEP.decode()}}), "order", id="deep-order"
        ),
        pytest.param(_blob({"__metadata__": {"x": 1}}), "strings to strings", id="metadata-int"),
        pytest.param(_blob({"__metadata__": [1]}), "strings to strings", id="metadata-list"),
        pytest.param(
            _raw(b'{"w":{"dtype":"F32","shape":[' + HUGE_INT.encode() + b"]"), "JSON", id="huge-int"
        ),
        pytest.param(_raw(b'{"w":' + DEEP + b"}"), "JSON", id="deep-json"),
        pytest.param(
            _raw(b'{"w":{"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}', b"\0" * 4),
            "not a list of counts",
            id="nan-dim",
        ),
        pytest.param(_raw(b"{}" + b"\0" * 6), "JSON", id="nul-padding"),
        pytest.param(struct.pack("<Q", 1_000) + b"{}", "truncated", id="prefix-past-end"),
        pytest.param(struct.pack("<Q", 2**64 - 1) + b"{}", "exceeds", id="prefix-2**64"),
        pytest.param(b"\xff" * 7, "truncated", id="short-prefix"),
    ],
)
def test_hostile_headers_raise_codec_error(data: bytes, pattern: str, tmp_path: Path) -> None:
    assert_refused(data, pattern, tmp_path)


def test_a_matching_digest_does_not_help_a_hostile_header() -> None:
    # Nothing is hashed before the header is checked, so no digest can vouch for 65 dims.
    with pytest.raises(CodecError, match="MAX_RANK"):
        digest_encoded(_one([0] * 65, [0, 0]))


def test_non_contiguous_buffers_are_refused() -> None:
    doubled = np.repeat(np.frombuffer(VALID, dtype=np.uint8), 2)
    assert_refused(memoryview(doubled[::2]), "contiguous")
    assert_refused(memoryview(doubled.reshape(-1, 2)[:, :1]), "contiguous")


def test_the_limits_themselves_are_allowed(tmp_path: Path) -> None:
    edge = {
        "r" * MAX_NAME_BYTES: np.zeros((1,) * MAX_RANK, dtype=np.float32),
        "wide": np.zeros((0, MAX_DIM), dtype=np.float64),
    }
    data = encode(edge)
    assert digest_encoded(data) == digest(edge)
    assert [v.shape for v in decode(data).values()] == [(1,) * MAX_RANK, (0, MAX_DIM)]
    assert tuple(decode(data, as_torch=True)["wide"].shape) == (0, MAX_DIM)
    path = tmp_path / "edge.st"
    path.write_bytes(data)
    assert digest_file(path) == digest(edge)


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"deep": np.zeros((1,) * (MAX_RANK + 1))}, "MAX_RANK"),
        ({"x" * (MAX_NAME_BYTES + 1): np.zeros(1)}, "MAX_NAME_BYTES"),
    ],
)
def test_encode_refuses_what_decode_would_refuse(params: dict[str, Any], pattern: str) -> None:
    with pytest.raises(CodecError, match=pattern):
        encode(params)


# ---------------------------------------------------------------- fuzzing

HOSTILE_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, 2**31, 2**48, 2**63, 2**64, -1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["F32", "U8", "BOOL", "BF16", "I64", "F8"]),
    lambda inner: st.lists(inner, max_size=70) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=80,
)
HOSTILE_COUNTS = st.sampled_from([0, 1, 2, MAX_DIM, 2**48, 2**63, 2**64]) | st.integers(0, 2**65)
FIELD_VALUES = {
    "dtype": HOSTILE_VALUES,
    "shape": st.lists(HOSTILE_COUNTS, max_size=70) | HOSTILE_VALUES,
    "data_offsets": st.lists(HOSTILE_COUNTS, min_size=2, max_size=2) | HOSTILE_VALUES,
    "extra": HOSTILE_VALUES,
}


def _outcome(data: bytes) -> None:
    """Each reader succeeds or raises CodecError; any other exception fails the test."""
    for read in READERS:
        with contextlib.suppress(CodecError):
            read(data)


@st.composite
def header_edits(draw: st.DrawFn) -> bytes:
    header, body = _split(VALID)
    names = [n for n in header if n != "__metadata__"]
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from([*names, "__metadata__", "new"]))
        if target == "__metadata__":
            order = draw(HOSTILE_VALUES | st.just(json.dumps(names[::-1])))
            header[target] = {
                "openswarm.order": order if isinstance(order, str) else json.dumps(order)
            }
        elif target == "new" or draw(st.booleans()):
            header[draw(st.text(max_size=4))] = draw(HOSTILE_VALUES)
        else:
            field = draw(st.sampled_from(sorted(FIELD_VALUES)))
            header[target][field] = draw(FIELD_VALUES[field])
    if draw(st.booleans()):
        body = body[: draw(st.integers(0, len(body)))]
    return _blob(header, body)


@st.composite
def byte_mutations(draw: st.DrawFn) -> bytes:
    blob = bytearray(VALID)
    for _ in range(draw(st.integers(1, 6))):
        blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(blob)))
    return bytes(blob[:cut] if draw(st.booleans()) else blob) + draw(st.binary(max_size=8))


@st.composite
def text_splices(draw: st.DrawFn) -> bytes:
    """Replace a run of the JSON text with other JSON-ish text, fixing the length prefix."""
    (length,) = struct.unpack("<Q", VALID[:8])
    header_text, body = bytearray(VALID[8 : 8 + length]), VALID[8 + length :]
    start = draw(st.integers(0, len(header_text)))
    stop = draw(st.integers(start, min(len(header_text), start + 12)))
    alphabet = st.sampled_from([*'{}[]",:0123456789-eE.tnfalsuNI ', "9" * 30, "\\ud800"])
    insert = "".join(draw(st.lists(alphabet, max_size=10))).encode()
    header_text[start:stop] = insert
    return _raw(bytes(header_text), body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(header_edits(), byte_mutations(), text_splices()))
def test_mutated_encodings_decode_or_raise_codec_error(data: bytes) -> None:
    _outcome(data)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_edits())
def test_mutated_files_decode_or_raise_codec_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "mutated.st"
    path.write_bytes(data)
    for read_file in (decode_file, digest_file):
        with contextlib.suppress(CodecError):
            read_file(path)
