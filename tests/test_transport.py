"""Compression of models in transit: round trips, the lossy modes' error bounds, and the
bounds on what arrives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from openswarm.codec import CodecError, decode, encode
from openswarm.codec.arrays import flat_storage
from openswarm.codec.decode import EncodedFile
from openswarm.codec.tensors import structure
from openswarm.codec.transport import COMPRESSIONS, SCALES, Transport
from openswarm.node.receive import ReceiveError, Receiver


def _receive(wired: bytes, size: int | None, zstd: bool, cap: int = 1 << 30) -> bytes:
    """`wired` as a fetch receives it, in 1000-byte messages."""
    receiver = Receiver(size, cap, None, zstd)
    for start in range(0, len(wired), 1000):
        receiver.add(wired[start : start + 1000])
    return bytes(receiver.finish())


def model(seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": (rng.normal(size=(64, 33)) * scale).astype(np.float32),
        "b": (rng.normal(size=33) * scale).astype(np.float64),
        "steps": rng.integers(-9, 9, size=7).astype(np.int64),
        "mask": rng.random(5) < 0.5,
        "half": rng.normal(size=4).astype(np.float16),
        "empty": np.zeros((0, 3), np.float32),
    }


@pytest.mark.parametrize("name", COMPRESSIONS)
def test_every_mode_round_trips_into_the_models_dtypes(name: str) -> None:
    params = model()
    transport = Transport.parse(name)
    data = transport.pack(params)
    assert _receive(transport.wire(data), len(data), transport.zstd) == data
    back = transport.unpack(data, structure(params))
    assert list(back) == list(params)
    for key, value in params.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
    if transport.lossy == "none":
        assert data == encode(params)  # lossless: the very encoding
        assert all(np.array_equal(back[k], params[k]) for k in params)
    for key in ("steps", "mask", "half"):  # what is not float32/64 travels as it is
        assert np.array_equal(back[key], params[key])
    # packing what was unpacked changes nothing more (a leader's hand-out stays the same)
    if transport.lossy in ("float16", "bfloat16"):
        assert transport.pack(back) == data


@pytest.mark.parametrize("name", COMPRESSIONS)
def test_a_packed_file_loads_tensor_by_tensor_as_unpack_gives(name: str, tmp_path: Path) -> None:
    params, transport = model(), Transport.parse(name)
    shape = structure(params)
    data = transport.pack(params)
    (tmp_path / "model").write_bytes(data)
    whole = transport.unpack(data, shape)
    with EncodedFile(tmp_path / "model") as encoded:
        load = transport.tensor_loader(encoded, shape)
        for t, (key, spec) in enumerate(shape.items()):
            expected = flat_storage(whole[key], spec.dtype)
            assert load(t).dtype == expected.dtype and np.array_equal(load(t), expected), key
    other = {**params, "w": np.zeros((64, 32), np.float32)}  # another model's snapshot
    (tmp_path / "other").write_bytes(transport.pack(other))
    with EncodedFile(tmp_path / "other") as encoded, pytest.raises(CodecError, match="'w' is"):
        transport.tensor_loader(encoded, shape)
    if transport.lossy == "int8":  # scales of another dtype: refused, as unpack refuses them
        packed = decode(data)
        packed[SCALES] = packed[SCALES].astype(np.float32)
        (tmp_path / "scales").write_bytes(encode(packed))
        with pytest.raises(CodecError, match="int8 scales"):
            transport.unpack(encode(packed), shape)
        with EncodedFile(tmp_path / "scales") as encoded, pytest.raises(CodecError, match="int8"):
            transport.tensor_loader(encoded, shape)
    renamed = {("v" if k == "w" else k): v for k, v in params.items()}
    (tmp_path / "renamed").write_bytes(transport.pack(renamed))
    with EncodedFile(tmp_path / "renamed") as encoded, pytest.raises(CodecError, match="names"):
        transport.tensor_loader(encoded, shape)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30]))
def test_lossy_modes_stay_within_their_error_bounds(seed: int, scale: float) -> None:
    params = model(seed, scale)
    shape = structure(params)
    for key in ("w", "b"):
        x = params[key].astype(np.float64)
        int8 = Transport.parse("int8").unpack(Transport.parse("int8").pack(params), shape)[key]
        step = np.abs(x).max() / 127
        # half a step, plus float32 rounding of x / scale and of q * scale (up to 127 steps)
        assert np.abs(int8 - x).max() <= step / 2 + 127 * step * 2.0**-23
        bf16 = Transport.parse("bfloat16").unpack(Transport.parse("bfloat16").pack(params), shape)
        assert np.all(np.abs(bf16[key] - x) <= np.abs(x) * 2.0**-8)
        if scale <= 1e3:  # float16 covers +-65504 and, relatively, down to 2**-14
            f16 = Transport.parse("float16").unpack(Transport.parse("float16").pack(params), shape)
            tiny = 2.0**-24  # float16's smallest step (subnormal)
            assert np.all(np.abs(f16[key] - x) <= np.maximum(np.abs(x) * 2.0**-11, tiny))


def test_lossy_modes_save_bytes_and_zstd_compresses_redundancy() -> None:
    params = {"w": np.random.default_rng(1).normal(size=100_000).astype(np.float32)}
    plain = len(Transport().pack(params))
    assert len(Transport.parse("float16").pack(params)) < plain * 0.51
    assert len(Transport.parse("int8").pack(params)) < plain * 0.26
    zeros = {"w": np.zeros(100_000, np.float32)}
    squeezed = Transport.parse("zstd")
    assert len(squeezed.wire(squeezed.pack(zeros))) < 1_000


def test_non_finite_values_still_reach_the_merge_as_non_finite() -> None:
    params = model()
    params["w"][3, 4] = np.nan
    shape = structure(params)
    for name in ("int8", "float16", "bfloat16"):
        back = Transport.parse(name).unpack(Transport.parse(name).pack(params), shape)
        assert not np.isfinite(back["w"]).all(), name
    big = {"w": np.array([1e6, 1.0], np.float32)}  # beyond float16
    back = Transport.parse("float16").unpack(Transport.parse("float16").pack(big), structure(big))
    assert np.isinf(back["w"][0])


def test_torch_tensors_travel_too() -> None:
    params = {"w": torch.randn(8, 3), "n": torch.arange(4)}
    transport = Transport.parse("int8+zstd")
    back = transport.unpack(transport.pack(params), structure(params))
    assert back["w"].dtype == np.float32 and np.array_equal(back["n"], params["n"].numpy())


def test_what_arrives_is_bounded_and_checked() -> None:
    transport = Transport.parse("zstd")
    data = transport.pack({"w": np.zeros(10_000, np.float32)})
    with pytest.raises(ReceiveError, match="more than the 1000 bytes"):
        _receive(transport.wire(data), None, True, cap=1000)  # a zip bomb stops at the cap
    with pytest.raises(ReceiveError, match="not a zstd stream"):
        _receive(b"\x00" * 64, None, True)
    int8 = Transport.parse("int8")
    with pytest.raises(CodecError, match="cannot travel"):
        int8.pack({SCALES: np.zeros(1, np.float32)})
    packed = int8.pack({"w": np.ones(3, np.float32)})
    with pytest.raises(CodecError, match="int8 scales"):
        int8.unpack(Transport().pack({"w": np.ones(3, np.float32)}), structure({"w": np.ones(3)}))
    with pytest.raises(CodecError, match="did not travel as int8"):
        fake = {"w": np.ones(3, np.float32), SCALES: np.ones(1)}  # scales, but w as it was
        int8.unpack(Transport().pack(fake), structure({"w": np.ones(3, np.float32)}))
    flat = {"w": np.ones(3, np.float32), SCALES: np.ones((1, 1))}  # 2-D scales
    with pytest.raises(CodecError, match="1-D float64"):
        int8.unpack(Transport().pack(flat), structure({"w": np.ones(3, np.float32)}))
    half = Transport.parse("float16")  # a tensor of another dtype where float16 travels
    with pytest.raises(CodecError, match="did not travel as float16"):
        half.unpack(encode({"w": np.ones(3, np.int16)}), structure({"w": np.ones(3, np.float32)}))
    with pytest.raises(CodecError, match="left over"):
        int8.unpack(packed, structure({"v": np.ones(3, np.int64)}) | {})
    with pytest.raises(ValueError, match="compression must be one of none, zstd"):
        Transport.parse("gzip")
