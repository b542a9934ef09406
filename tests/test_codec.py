"""Parameter codec: round trips, order, canonical digests, refusals and memory bounds."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from openswarm.codec import (
    CodecError,
    check_finite,
    decode,
    decode_file,
    digest,
    digest_encoded,
    digest_file,
    encode,
    encode_to_file,
    iter_encoded_chunks,
)

NUMPY_DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]
TORCH_DTYPES = [*NUMPY_DTYPES, "bfloat16"]
HAS_ML_DTYPES = importlib.util.find_spec("ml_dtypes") is not None

names = st.text(min_size=0, max_size=12).filter(lambda s: s != "__metadata__")
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)


def raw_bytes(value: np.ndarray | torch.Tensor) -> bytes:
    """A tensor's bytes in C order, whatever its kind."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 0:
            return b""
        return value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return np.ascontiguousarray(value).tobytes()


def torch_from_bits(dtype: str, bits: np.ndarray) -> torch.Tensor:
    """A torch tensor of ``dtype`` whose raw bits are ``bits`` (any values, NaNs included)."""
    if dtype == "bfloat16":
        return torch.from_numpy(bits.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(bits.copy())


@st.composite
def numpy_sets(draw: st.DrawFn) -> dict[str, np.ndarray]:
    keys = draw(st.lists(names, min_size=0, max_size=5, unique=True))
    return {
        k: draw(hnp.arrays(np.dtype(draw(st.sampled_from(NUMPY_DTYPES))), shapes)) for k in keys
    }


@st.composite
def torch_sets(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    keys = draw(st.lists(names, min_size=0, max_size=5, unique=True))
    out = {}
    for k in keys:
        dtype = draw(st.sampled_from(TORCH_DTYPES))
        storage = np.dtype(np.uint16) if dtype == "bfloat16" else np.dtype(dtype)
        out[k] = torch_from_bits(dtype, draw(hnp.arrays(storage, shapes)))
    return out


def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert type(a[name]) is type(b[name])
        assert a[name].dtype == b[name].dtype
        assert tuple(a[name].shape) == tuple(b[name].shape)
        assert raw_bytes(a[name]) == raw_bytes(b[name])


# ---------------------------------------------------------------- round trips and order


@settings(max_examples=60, deadline=None)
@given(numpy_sets())
def test_numpy_round_trip_is_exact_and_keeps_order(params: dict[str, np.ndarray]) -> None:
    data = encode(params)
    assert_same(decode(data), params)
    assert digest_encoded(data) == digest(params)


@settings(max_examples=60, deadline=None)
@given(torch_sets())
def test_torch_round_trip_is_exact_including_bfloat16(params: dict[str, torch.Tensor]) -> None:
    data = encode(params)
    assert_same(decode(data, as_torch=True), params)
    assert digest_encoded(data) == digest(params)


def test_order_is_the_callers_not_sorted() -> None:
    params = {n: np.full(2, i, np.int32) for i, n in enumerate(["z", "a", "m", "B", "0"])}
    assert list(decode(encode(params))) == ["z", "a", "m", "B", "0"]


def test_non_contiguous_and_big_endian_inputs_decode_to_their_values() -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tbase = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    params = {
        "t": base.T,
        "s": base[::2, 1::3],
        "be": base.astype(">f4"),
        "tt": tbase.t(),
        "grad": torch.ones(3, requires_grad=True),
    }
    out = decode(encode(params))
    np.testing.assert_array_equal(out["t"], base.T)
    np.testing.assert_array_equal(out["s"], base[::2, 1::3])
    np.testing.assert_array_equal(out["be"], base)
    np.testing.assert_array_equal(out["tt"], tbase.t().numpy())
    assert out["be"].dtype == np.float32


# ---------------------------------------------------------------- digests


FIXED = {
    "layer.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
    "layer.bias": np.array([-1.5, 2.25], dtype=np.float16),
    "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    "mask": np.array([True, False, True]),
    "empty": np.zeros((0, 3), dtype=np.uint8),
}
# Computed once from the definition in openswarm.codec.digest; must never change.
FIXED_DIGEST = "042f52a1a0eb85abe59db2ffa1fb03476cc706251e1f1170974d15a77a227615"
BF16_DIGEST = "9451910a6fd4f2f5f82adc4ae25d8132d5424cbe24a8ecff757d4d30b3d46d37"


def test_digest_matches_the_hard_coded_value_on_any_machine(tmp_path: Path) -> None:
    as_torch = {k: torch.from_numpy(v.copy()) for k, v in FIXED.items()}
    scrambled = {k: np.array(v, order="F") for k, v in FIXED.items()}
    scrambled["layer.weight"] = np.ascontiguousarray(FIXED["layer.weight"].T).T
    data = encode(FIXED)
    encode_to_file(FIXED, tmp_path / "p.st")
    assert digest(FIXED) == FIXED_DIGEST
    assert digest(as_torch) == FIXED_DIGEST
    assert digest(scrambled) == FIXED_DIGEST
    assert digest({k: v.astype(v.dtype.newbyteorder(">")) for k, v in FIXED.items()}) == (
        FIXED_DIGEST
    )
    assert digest_encoded(data) == FIXED_DIGEST
    assert digest_encoded(bytearray(data)) == FIXED_DIGEST
    assert digest_file(tmp_path / "p.st") == FIXED_DIGEST
    assert digest(decode(data)) == FIXED_DIGEST


def test_bfloat16_digest_is_fixed() -> None:
    params = {"w": torch.tensor([[1.0, -2.5], [0.125, 3.0]], dtype=torch.bfloat16)}
    assert digest(params) == BF16_DIGEST
    assert digest({"w": params["w"].t().contiguous().t()}) == BF16_DIGEST


def test_digest_follows_the_documented_definition() -> None:
    import hashlib

    params = {"a": np.array([1, 2], dtype=np.int16)}
    u64 = struct.Struct("<Q").pack
    expected = hashlib.sha256(
        b"openswarm-params-v1\x00"
        + u64(1)
        + u64(1)
        + b"a"
        + u64(5)
        + b"int16"
        + u64(1)
        + u64(2)
        + u64(4)
        + b"\x01\x00\x02\x00"
    ).hexdigest()
    assert digest(params) == expected


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.update({"layer.weight": p["layer.weight"] + np.float32(2**-20)}),
        lambda p: p.update({"mask": ~p["mask"]}),
        lambda p: p.update({"layer.bias": p["layer.bias"].astype(np.float32)}),
        lambda p: p.update({"layer.weight": p["layer.weight"].reshape(3, 2)}),
        lambda p: p.update({"layer.weight": p.pop("layer.weight")}),  # moves it last
        lambda p: p.update({"layer.weight2": p.pop("layer.weight")}),
        lambda p: p.update({"empty": np.zeros((3, 0), dtype=np.uint8)}),
        lambda p: p.pop("empty"),
    ],
)
def test_digest_changes_with_any_value_name_dtype_shape_or_order(change) -> None:
    params = {k: v.copy() for k, v in FIXED.items()}
    change(params)
    assert digest(params) != FIXED_DIGEST
    assert digest_encoded(encode(params)) == digest(params)


# ---------------------------------------------------------------- finiteness


@pytest.mark.parametrize(
    "value",
    [
        np.array([1.0, np.nan], dtype=np.float32),
        np.array([np.inf], dtype=np.float64),
        np.array([-np.inf, 0], dtype=np.float16),
        torch.tensor([0.0, float("nan")], dtype=torch.bfloat16),
        torch.tensor([float("inf")], dtype=torch.bfloat16),
        np.array([[0.5, 1.0], [np.nan, 2.0]], dtype=np.float64).T,
    ],
)
def test_non_finite_values_are_refused_when_asked(value) -> None:
    params = {"ok": np.ones(3, np.float32), "bad.tensor": value}
    with pytest.raises(CodecError, match=r"'bad\.tensor'.*NaN or infinite"):
        encode(params, require_finite=True)
    with pytest.raises(CodecError, match=r"'bad\.tensor'"):
        check_finite(params)
    with pytest.raises(CodecError, match=r"'bad\.tensor'"):
        iter_encoded_chunks(params, require_finite=True)
    encode(params)  # allowed unless asked


def test_large_finite_values_pass_the_finite_check() -> None:
    params = {
        "big": np.full(1000, 3e38, np.float32),
        "bf": torch.full((5,), 3e38, dtype=torch.bfloat16),
        "ints": np.array([2**62], np.int64),
    }
    check_finite(params)
    encode(params, require_finite=True)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({1: np.zeros(2)}, "names must be strings"),
        ({"x": np.zeros(2, np.complex64)}, r"'x'.*unsupported dtype complex64"),
        ({"x": np.zeros(2, np.uint16)}, r"'x'.*unsupported dtype uint16"),
        ({"x": torch.zeros(2, dtype=torch.complex64)}, r"'x'.*unsupported dtype"),
        ({"x": [1.0, 2.0]}, r"'x'.*expected a numpy array or torch tensor, got list"),
        ({"__metadata__": np.zeros(2)}, "reserved"),
        ({"\ud800": np.zeros(2)}, "UTF-8"),
        ([("x", np.zeros(2))], "mapping"),
    ],
)
def test_bad_parameters_raise_codec_error(params, pattern: str) -> None:
    for func in (encode, digest, check_finite, iter_encoded_chunks):
        with pytest.raises(CodecError, match=pattern):
            func(params)


def _header(data: bytes) -> dict:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length])


def _with_header(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


SMALL = {
    "a": np.arange(3, dtype=np.float32),
    "b": np.array([True, False]),
    "c": np.array(5, np.int64),
}


def _small_parts() -> tuple[dict, bytes]:
    data = encode(SMALL)
    (length,) = struct.unpack("<Q", data[:8])
    return _header(data), data[8 + length :]


def _lie(edit) -> bytes:
    header, body = _small_parts()
    body = edit(header, body)
    return _with_header(header, body)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"", "truncated"),
        (b"\x05\x00\x00", "truncated"),
        (struct.pack("<Q", 50) + b"{}", "truncated"),
        (struct.pack("<Q", 2**40) + b"{}", "exceeds"),
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "not UTF-8 JSON"),
        (struct.pack("<Q", 2) + b"[]", "not an object"),
        (struct.pack("<Q", 9) + b'{"a":1}  ', "needs exactly"),
        (_with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b""), "trunc"),
        (_lie(lambda h, b: b + b"\x00"), "trailing bytes"),
        (_lie(lambda h, b: b[:-1]), "truncated data"),
        (_lie(lambda h, b: h["a"].update(shape=[4]) or b), "needs 16"),
        (_lie(lambda h, b: h["a"].update(shape=[-3]) or b), "not a list of counts"),
        (_lie(lambda h, b: h["a"].update(shape=[True]) or b), "not a list of counts"),
        (_lie(lambda h, b: h["a"].update(dtype="F8_E4M3") or b), "unsupported dtype"),
        (_lie(lambda h, b: h["a"].update(data_offsets=[1]) or b), "not \\[begin, end\\]"),
        (_lie(lambda h, b: h["b"].update(data_offsets=[0, 2]) or b), "back to back"),
        (_lie(lambda h, b: h["__metadata__"].update({"openswarm.order": '["a"]'}) or b), "order"),
        (_lie(lambda h, b: h["__metadata__"].update({"openswarm.order": "[1,2"}) or b), "order"),
        (_lie(lambda h, b: h.update(__metadata__={"x": 1}) or b), "strings to strings"),
        (_lie(lambda h, b: b[:12] + b"\x02" + b[13:]), "BOOL data"),
    ],
)
def test_corrupt_bytes_raise_codec_error(data: bytes, pattern: str, tmp_path: Path) -> None:
    with pytest.raises(CodecError, match=pattern):
        decode(data)
    with pytest.raises(CodecError, match=pattern):
        digest_encoded(data)
    path = tmp_path / "bad.st"
    path.write_bytes(data)
    with pytest.raises(CodecError, match=pattern):
        decode_file(path)


def test_duplicate_header_keys_are_refused() -> None:
    entry = '{"dtype":"U8","shape":[0],"data_offsets":[0,0]}'
    text = f'{{"a":{entry},"a":{entry}}}'.encode()
    with pytest.raises(CodecError, match="duplicate key 'a'"):
        decode(struct.pack("<Q", len(text)) + text)


def test_every_truncation_is_refused() -> None:
    data = encode(SMALL)
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:cut])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_corruption_decodes_or_raises_codec_error(data: st.DataObject) -> None:
    blob = bytearray(encode(SMALL))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CodecError):
        decode(bytes(blob))


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(CodecError, match="expected bytes"):
        decode(12)  # type: ignore[arg-type]


# ---------------------------------------------------------------- bfloat16 rule


@pytest.mark.skipif(HAS_ML_DTYPES, reason="the error applies only without ml_dtypes")
def test_bfloat16_to_numpy_without_ml_dtypes_is_a_clear_error() -> None:
    data = encode({"w": torch.ones(2, dtype=torch.bfloat16)})
    with pytest.raises(CodecError, match=r"'w' is bfloat16.*ml_dtypes.*as_torch=True"):
        decode(data)
    assert decode(data, as_torch=True)["w"].dtype == torch.bfloat16


@pytest.mark.skipif(not HAS_ML_DTYPES, reason="needs ml_dtypes")
def test_bfloat16_to_numpy_with_ml_dtypes_round_trips() -> None:  # pragma: no cover
    w = torch.tensor([1.0, -3.5], dtype=torch.bfloat16)
    out = decode(encode({"w": w}))["w"]
    assert out.dtype.name == "bfloat16"
    assert digest({"w": out}) == digest({"w": w})


# ---------------------------------------------------------------- interoperability


def test_safetensors_library_reads_our_bytes_and_we_read_its() -> None:
    params = {"z": np.arange(4, dtype=np.int32), "a": np.ones((2, 2), np.float16)}
    theirs = safetensors.numpy.load(encode(params))
    assert set(theirs) == set(params)
    for k in params:
        np.testing.assert_array_equal(theirs[k], params[k])
    tparams = {"w": torch.randn(3, 2).to(torch.bfloat16), "b": torch.zeros(2)}
    assert_same(
        decode(safetensors.torch.save(tparams), as_torch=True),
        {k: tparams[k] for k in sorted(tparams)},
    )
    back = safetensors.torch.load(encode(tparams))
    assert torch.equal(back["w"], tparams["w"])


# ---------------------------------------------------------------- streaming helpers


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1 << 20])
def test_chunks_join_to_the_encoding(chunk_size: int) -> None:
    params = {"w": np.arange(50, dtype=np.float64), "t": torch.arange(7, dtype=torch.int16)}
    chunks = list(iter_encoded_chunks(params, chunk_size))
    assert b"".join(chunks) == encode(params)
    assert all(len(c) == chunk_size for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= chunk_size


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(CodecError, match="chunk_size"):
        iter_encoded_chunks({}, 0)


def test_file_round_trip(tmp_path: Path) -> None:
    params = {"w": torch.randn(4, 3).to(torch.bfloat16), "n": torch.tensor(3)}
    path = tmp_path / "sub.st"
    size = encode_to_file(params, path)
    assert size == path.stat().st_size
    assert path.read_bytes() == encode(params)
    assert_same(decode_file(path, as_torch=True), params)
    assert digest_file(path) == digest(params)
    assert [p.name for p in tmp_path.iterdir()] == ["sub.st"]  # no temp file left


def test_empty_parameter_set_round_trips() -> None:
    assert decode(encode({})) == {}
    assert digest_encoded(encode({})) == digest({})


# ---------------------------------------------------------------- memory


def _peak(func) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = func()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_stays_near_one_extra_copy(tmp_path: Path) -> None:
    size = 200 * 2**20
    params = {f"layer{i}": np.full(size // 16, i + 0.5, np.float32) for i in range(4)}
    slack = 8 * 2**20

    data, peak = _peak(lambda: encode(params))
    assert peak <= size + slack, f"encode peak {peak / 2**20:.0f} MiB for {size >> 20} MiB"
    decoded, peak = _peak(lambda: decode(data))
    assert peak <= size + slack, f"decode peak {peak / 2**20:.0f} MiB"
    np.testing.assert_array_equal(decoded["layer3"], params["layer3"])  # type: ignore[index]
    decoded = None
    _, peak = _peak(lambda: digest_encoded(data))
    assert peak <= slack
    _, peak = _peak(lambda: digest(params))
    assert peak <= slack
    data = None

    _, peak = _peak(lambda: sum(len(c) for c in iter_encoded_chunks(params, 1 << 20)))
    assert peak <= slack
    path = tmp_path / "big.st"
    _, peak = _peak(lambda: encode_to_file(params, path))
    assert peak <= slack
    from_file, peak = _peak(lambda: decode_file(path))
    assert peak <= size + slack
    assert digest(from_file) == digest_file(path)  # type: ignore[arg-type]
