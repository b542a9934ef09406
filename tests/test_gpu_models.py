"""Parameters in any dtype (and on any device) through the torch and HF bindings, exactly.

The round trip a swarm makes: get_params -> encode -> decode (numpy, as the peer does, or
torch) -> merge -> set_params; after it the model's digest must equal the merged one, and
every tensor must keep its device, dtype and identity. The CUDA side of the same checks is
benchmarks/gpu_check.py (run on a GPU machine); tests here run on the CPU.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from openswarm.codec import CodecError, decode, digest, encode, to_torch
from openswarm.merge import mean
from openswarm.node.peer import SwarmError
from openswarm.node.settings import NetworkConfig
from openswarm.torch import SwarmCallback

pytest.importorskip("ml_dtypes")  # the peer holds bfloat16 as ml_dtypes numpy arrays

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _offline(tmp_path: Path) -> NetworkConfig:
    """Enough configuration to build a callback; nothing here connects."""
    return NetworkConfig(ledger=("127.0.0.1:1",), identity=tmp_path / "none")


class Mixed(torch.nn.Module):
    """One layer per float dtype, plus integer, uint8 and bool buffers and BatchNorm stats."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(5, 3).to(d) for d in FLOATS)
        self.norm = torch.nn.BatchNorm1d(3)  # float32 stats and an int64 counter
        self.register_buffer("steps", torch.tensor(seed * 7 + 1, dtype=torch.int64))
        self.register_buffer("codes", torch.randint(0, 255, (4,), dtype=torch.uint8))
        self.register_buffer("small", torch.randint(-9, 9, (2, 2), dtype=torch.int32))
        self.register_buffer("mask", torch.rand(6) > 0.5)


def _placement(model: torch.nn.Module) -> dict[str, tuple[torch.device, torch.dtype, int]]:
    return {
        name: (t.device, t.dtype, t.untyped_storage().data_ptr())
        for name, t in model.state_dict().items()
    }


def _bits(t: torch.Tensor) -> np.ndarray:
    """The raw bytes of a tensor: equal bits, not merely equal values (-0.0, NaN payloads)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


@pytest.mark.parametrize("as_torch", [False, True])
def test_torch_binding_round_trips_every_dtype_bit_exactly(tmp_path: Path, as_torch: bool) -> None:
    source = SwarmCallback(Mixed(1), 1, 1, network=_offline(tmp_path))
    sent = source.get_params()
    assert {t.dtype for t in sent.values()} >= {*FLOATS, torch.int64, torch.uint8, torch.bool}
    target = SwarmCallback(Mixed(2), 1, 1, network=_offline(tmp_path))
    before = _placement(target.model)
    assert digest(target.get_params()) != digest(sent)
    target.set_params(decode(encode(sent), as_torch=as_torch))
    assert digest(target.get_params()) == digest(sent)
    assert _placement(target.model) == before  # loaded in place: same device, dtype, storage
    for name, value in target.model.state_dict().items():
        assert np.array_equal(_bits(value), _bits(sent[name])), name


def test_merged_mixed_dtypes_load_to_the_merged_digest(tmp_path: Path) -> None:
    sites = [SwarmCallback(Mixed(s), 1, 1, network=_offline(tmp_path)) for s in (3, 4, 5)]
    decoded = [decode(encode(cb.get_params())) for cb in sites]  # numpy, as the peer holds them
    merged = mean(decoded, weights=[1.0, 2.0, 3.0])
    assert merged["layers.1.weight"].dtype.name == "bfloat16"
    for cb in sites:
        cb.set_params(merged)
        assert digest(cb.get_params()) == digest(merged)
    # 16-bit floats merge in float32 and round back once, to nearest even, as torch rounds
    stacked = torch.stack([to_torch(d["layers.1.weight"]).float() for d in decoded])
    weights = torch.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1) / 6.0
    expected = (stacked * weights).sum(0).to(torch.bfloat16)
    assert torch.equal(sites[0].model.layers[1].weight.detach(), expected)


def test_mean_writes_bfloat16_into_kept_output_arrays() -> None:
    """The leader's merge reuses its output arrays, allocated like the decoded inputs."""
    import ml_dtypes

    gen = torch.Generator().manual_seed(0)
    sets = [
        decode(encode({"w": torch.randn(300, generator=gen).to(torch.bfloat16),
                       "h": torch.randn(5, generator=gen).half()}))
        for _ in range(3)
    ]  # fmt: skip
    want = mean(sets, [1.0, 1.0, 2.0])
    out = {n: np.empty(v.shape, v.dtype) for n, v in sets[0].items()}
    assert out["w"].dtype == ml_dtypes.bfloat16
    got = mean(sets, [1.0, 1.0, 2.0], out=out)
    assert digest(got) == digest(want)
    assert np.shares_memory(got["w"], out["w"]) and got["w"].dtype == ml_dtypes.bfloat16
    bits = {"w": np.empty(300, np.uint16), "h": np.empty(5, np.float16)}  # raw bits work too
    assert digest(mean(sets, [1.0, 1.0, 2.0], out=bits)) == digest(want)


def test_set_params_refuses_what_would_not_load_exactly(tmp_path: Path) -> None:
    cb = SwarmCallback(Mixed(1), 1, 1, network=_offline(tmp_path))
    good = cb.get_params()
    before = digest(good)
    cast = {**good, "layers.0.weight": good["layers.0.weight"].float()}
    with pytest.raises(SwarmError, match=r"'layers\.0\.weight' is torch\.float32.*torch\.float16"):
        cb.set_params(cast)
    shorter = {**good, "layers.2.bias": good["layers.2.bias"][:2].clone()}
    with pytest.raises(SwarmError, match=r"'layers\.2\.bias'.*\(2,\).*\(3,\)"):
        cb.set_params(shorter)
    missing = {k: v for k, v in good.items() if k != "steps"}
    with pytest.raises(SwarmError, match=r"missing \['steps'\]"):
        cb.set_params(missing)
    with pytest.raises(SwarmError, match=r"'mask'.*unsupported dtype"):
        cb.set_params({**good, "mask": np.array(["x"] * 6)})
    assert digest(cb.get_params()) == before  # nothing was half loaded


def test_meta_parameters_are_refused_clearly(tmp_path: Path) -> None:
    with torch.device("meta"):
        model = torch.nn.Linear(3, 2)
    cb = SwarmCallback(model, 1, 1, network=_offline(tmp_path))
    with pytest.raises(SwarmError, match=r"'weight' is on the meta device"):
        cb.get_params()


def test_bfloat16_without_ml_dtypes_is_refused_at_construction(tmp_path: Path, monkeypatch) -> None:
    real = importlib.util.find_spec

    def without_ml_dtypes(name: str, *args: object) -> object:
        return None if name == "ml_dtypes" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_ml_dtypes)
    with pytest.raises(SwarmError, match=r"'layers\.1\.weight' is bfloat16.*pip install ml_dtypes"):
        SwarmCallback(Mixed(1), 1, 1, network=_offline(tmp_path))
    SwarmCallback(torch.nn.Linear(2, 2), 1, 1, network=_offline(tmp_path))  # no bf16: fine


def test_to_torch_converts_numpy_exactly_and_shares_memory() -> None:
    import ml_dtypes

    bf16 = np.array([[1.0, -2.5], [3e38, -0.0]], dtype=ml_dtypes.bfloat16)
    out = to_torch(bf16)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 2)
    assert np.array_equal(out.view(torch.int16).numpy().view(np.uint16), bf16.view(np.uint16))
    plain = np.arange(6, dtype=np.float64).reshape(2, 3)
    assert to_torch(plain).data_ptr() == plain.ctypes.data  # no copy
    frozen = np.arange(4, dtype=np.int32)
    frozen.flags.writeable = False
    assert torch.equal(to_torch(frozen), torch.arange(4, dtype=torch.int32))
    swapped = np.arange(3, dtype=">f4")
    assert torch.equal(to_torch(swapped), torch.arange(3, dtype=torch.float32))
    strided = np.arange(10, dtype=np.float16)[::2]
    assert torch.equal(to_torch(strided), torch.arange(0, 10, 2, dtype=torch.float16))
    assert to_torch(np.int64(5)).shape == ()
    tensor = torch.ones(2)
    assert to_torch(tensor) is tensor
    with pytest.raises(CodecError, match="unsupported dtype"):
        to_torch(np.array([1 + 2j]))
    with pytest.raises(CodecError, match="expected a numpy array"):
        to_torch([1.0, 2.0])


# --------------------------------------------------------------------------- Hugging Face
@pytest.fixture
def hf_site():
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import hf_swarm_script

    return hf_swarm_script


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("mode", ["full", "peft"])
def test_hf_binding_round_trips_16_and_64_bit_models(
    tmp_path: Path, hf_site, dtype: torch.dtype, mode: str
) -> None:
    from openswarm.hf import SwarmCallback as HfCallback

    def model(seed: int) -> torch.nn.Module:
        base = hf_site.tiny_bert(seed).to(dtype)
        if mode == "full":
            return base
        torch.manual_seed(seed + 100)
        adapted = hf_site.with_lora(base)
        for name, p in adapted.named_parameters():  # non-zero adapters, in the model's dtype
            if "lora_" in name or "modules_to_save" in name:
                p.data = torch.randn_like(p, dtype=torch.float32).to(dtype)
        return adapted

    source = HfCallback(model(1), 1, 1, hf_mode=mode, network=_offline(tmp_path))
    sent = source.get_params()
    assert dtype in {t.dtype for t in sent.values()}
    target = HfCallback(model(2), 1, 1, hf_mode=mode, network=_offline(tmp_path))
    before = _placement(target.model)
    target.set_params(decode(encode(sent)))
    assert digest(target.get_params()) == digest(sent)
    assert _placement(target.model) == before


# --------------------------------------------------------------------------- gpu_check.py
GPU_CHECK = Path(__file__).parent.parent / "benchmarks" / "gpu_check.py"


def _gpu_check(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GPU_CHECK), *args], capture_output=True, text=True,
        timeout=timeout_s, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_check_says_when_there_is_no_cuda_device() -> None:
    done = _gpu_check("--no-swarm", timeout_s=120)
    assert (done.returncode, done.stdout) == (2, "no CUDA device: nothing checked\n")


@pytest.mark.slow
def test_gpu_check_passes_on_the_cpu_with_a_real_mixed_dtype_swarm() -> None:
    """The GPU script's smoke test: every check, the 3-process swarm of a model with
    float16, bfloat16, float32 and float64 tensors and integer and bool buffers included."""
    done = _gpu_check("--device", "cpu", "--epochs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS  swarm of 3 site processes" in done.stdout
    assert done.stdout.rstrip().endswith("PASS: 8 of 8 checks passed or skipped on cpu")
