"""GPU check: models whose parameters live on a CUDA device sync and load back exactly.

Each check prints PASS or FAIL (or SKIP, with the reason) on one line:

1. round trip, torch binding, one model per dtype (float16, bfloat16, float32, float64,
   each with int64, int32, uint8 and bool buffers) on the device: get_params -> encode ->
   decode (numpy, as a peer holds parameters) -> set_params into another model on the
   device. The digest must equal the sent one, every tensor must keep its device, dtype
   and storage (loaded in place), and its bits must equal the sent ones.
2. round trip, Hugging Face binding: a tiny BERT in bfloat16 and in float16 on the device,
   the same way (SKIP without transformers).
3. merge: three sites' bfloat16/float16 parameters from the device, merged by the weighted
   mean (16-bit floats compute in float32 and round back once), loaded into each site:
   every site's digest equals the merged one.
4. swarm: a real ledger and 3 site processes (`openswarm.launch.run_swarm`, the launcher
   behind `openswarm run`), each training a small mixed-dtype model (float32, bfloat16 and
   float16 layers, BatchNorm, int64/bool/float64 buffers) on the device with the torch
   `SwarmCallback`: all three must end with one final digest, with every tensor still on
   the device in its dtype.

Usage (from the repository root, in an environment with openswarm and torch):

    python benchmarks/gpu_check.py                  # the CUDA device (default --device cuda)
    python benchmarks/gpu_check.py --device cpu     # the same checks on the CPU: a smoke test
    python benchmarks/gpu_check.py --device mps     # Apple GPUs (no float64 there: skipped)
    [--epochs 3] [--no-swarm] [--timeout 600] [--keep]

Exit status: 0 when every check passed, 1 when one failed, 2 when the device is missing
("no CUDA device: nothing checked"). Several processes of one site (DDP with NCCL) need
one GPU per process and are not checked here; tests/test_gpu_sites.py checks the same
code over gloo on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openswarm.codec import decode, digest, encode
from openswarm.merge import mean
from openswarm.node.settings import NetworkConfig
from openswarm.torch import SwarmCallback

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SITES = 3
CLASSES, FEATURES = 8, 32

Check = Callable[[], str]  # returns a detail line; raises AssertionError (or else) on failure


# --------------------------------------------------------------------------- the models
class Buffers(torch.nn.Module):
    """A layer of one float dtype, with integer and bool buffers."""

    def __init__(self, dtype: torch.dtype, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layer = torch.nn.Linear(16, 8).to(dtype)
        self.register_buffer("steps", torch.tensor(seed, dtype=torch.int64))
        self.register_buffer("small", torch.randint(-99, 99, (3,), dtype=torch.int32))
        self.register_buffer("codes", torch.randint(0, 255, (5,), dtype=torch.uint8))
        self.register_buffer("mask", torch.rand(7) > 0.5)


class SiteModel(torch.nn.Module):
    """A small classifier with float32, bfloat16 and float16 heads and assorted buffers."""

    def __init__(self, seed: int, *, float64: bool = True) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU()
        )
        self.head = torch.nn.Linear(64, CLASSES)
        self.head_bf16 = torch.nn.Linear(64, CLASSES).to(torch.bfloat16)
        self.head_fp16 = torch.nn.Linear(64, CLASSES).to(torch.float16)
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("mask", torch.ones(CLASSES, dtype=torch.bool))
        scale_dtype = torch.float64 if float64 else torch.float32
        self.register_buffer("scale", torch.ones(CLASSES, dtype=scale_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        out = self.head(h)
        out = out + self.head_bf16(h.to(torch.bfloat16)).float()
        out = out + self.head_fp16(h.half()).float()
        if self.training:
            self.seen += len(x)
        return out * self.mask * self.scale.float()


def placement(model: torch.nn.Module) -> dict[str, tuple[str, str, int]]:
    """Each state tensor's device, dtype and storage address."""
    return {
        name: (str(t.device), str(t.dtype), t.untyped_storage().data_ptr())
        for name, t in model.state_dict().items()
    }


def bits(t: torch.Tensor) -> np.ndarray:
    """A tensor's raw bytes, on the host."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def offline(root: Path) -> NetworkConfig:
    """Enough configuration to build a callback; nothing connects."""
    return NetworkConfig(ledger=("127.0.0.1:1",), identity=root / "none")


# --------------------------------------------------------------------------- the checks
def round_trip(sent_cb: Any, target_cb: Any, device: torch.device) -> str:
    """Send one binding's parameters into another's model; assert an exact, in-place load."""
    sent = sent_cb.get_params()
    assert all(t.device.type == "cpu" for t in sent.values()), "get_params left the device"
    before = placement(target_cb.model)
    assert all(d.startswith(device.type) for d, _, _ in before.values()), before
    target_cb.set_params(decode(encode(sent)))
    after = placement(target_cb.model)
    assert after == before, "a tensor changed device, dtype or storage"
    got = digest(target_cb.get_params())
    assert got == digest(sent), f"digest {got[:12]}… != sent {digest(sent)[:12]}…"
    for name, value in target_cb.model.state_dict().items():
        assert np.array_equal(bits(value), bits(sent[name])), f"{name}: bits differ"
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in sent.values()})
    return f"{len(sent)} tensors ({', '.join(dtypes)}), digest {got[:12]}…"


def torch_checks(device: torch.device, root: Path) -> list[tuple[str, Check]]:
    checks = []
    for dtype in FLOATS:
        name = f"round trip, torch binding, {str(dtype).removeprefix('torch.')} on {device}"
        if device.type == "mps" and dtype == torch.float64:
            checks.append((name, lambda: skip("MPS has no float64")))
            continue

        def check(dtype: torch.dtype = dtype) -> str:
            a = SwarmCallback(Buffers(dtype, 1).to(device), 1, 1, network=offline(root))
            b = SwarmCallback(Buffers(dtype, 2).to(device), 1, 1, network=offline(root))
            return round_trip(a, b, device)

        checks.append((name, check))
    return checks


def hf_checks(device: torch.device, root: Path) -> list[tuple[str, Check]]:
    checks = []
    for dtype in (torch.bfloat16, torch.float16):
        name = f"round trip, HF binding, tiny BERT in {str(dtype).removeprefix('torch.')}"

        def check(dtype: torch.dtype = dtype) -> str:
            try:
                from transformers import BertConfig, BertForSequenceClassification

                from openswarm.hf import SwarmCallback as HfCallback
            except ImportError as exc:
                return skip(f"needs transformers ({exc})")

            def bert(seed: int) -> torch.nn.Module:
                torch.manual_seed(seed)
                config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64,
                                    max_position_embeddings=16, num_labels=4)  # fmt: skip
                return BertForSequenceClassification(config).to(device=device, dtype=dtype)

            a = HfCallback(bert(1), 1, 1, network=offline(root))
            b = HfCallback(bert(2), 1, 1, network=offline(root))
            return round_trip(a, b, device)

        checks.append((name, check))
    return checks


def merge_check(device: torch.device, root: Path) -> tuple[str, Check]:
    def check() -> str:
        float64 = device.type != "mps"
        sites = [
            SwarmCallback(SiteModel(s, float64=float64).to(device), 1, 1, network=offline(root))
            for s in range(SITES)
        ]
        merged = mean([decode(encode(cb.get_params())) for cb in sites], weights=[1, 2, 3])
        want = digest(merged)
        for cb in sites:
            before = placement(cb.model)
            cb.set_params(merged)
            assert placement(cb.model) == before, "a tensor changed device, dtype or storage"
            assert digest(cb.get_params()) == want, "a site's digest differs from the merge's"
        # 16-bit floats: computed in float32 from the device values, rounded back once
        w = sites[0].model.head_bf16.weight.detach()
        assert w.device.type == device.type and w.dtype == torch.bfloat16
        return f"{len(merged)} tensors merged and loaded on {SITES} sites, digest {want[:12]}…"

    return f"merge of {SITES} sites' bfloat16/float16 parameters on {device}", check


def swarm_check(device: torch.device, epochs: int, workdir: Path) -> tuple[str, Check]:
    def check() -> str:
        from openswarm.launch import run_swarm

        started = time.monotonic()
        args = ["--site", "--device", str(device), "--epochs", str(epochs)]
        result = run_swarm(Path(__file__), SITES, script_args=args, workdir=workdir / "run",
                           min_peers=SITES, threads_per_peer=1)  # fmt: skip
        seconds = time.monotonic() - started
        logs = {p.name: p.log_path for p in result.peers}
        if result.interrupted:
            raise AssertionError(f"stopped after {seconds:.0f} s (timeout); logs: {logs}")
        assert result.ok, f"exit codes {result.exit_codes}, error {result.error}; logs: {logs}"
        records = result.results
        finals = {name: (r or {}).get("final_digest") for name, r in records.items()}
        assert len(set(finals.values())) == 1 and None not in finals.values(), finals
        kept = {name: (r or {}).get("placement_kept") for name, r in records.items()}
        assert all(kept.values()), f"tensors moved or changed dtype: {kept}"
        on = {name: (r or {}).get("devices") for name, r in records.items()}
        assert all(d == [device.type] for d in on.values()), f"devices after training: {on}"
        accuracy = [round(float((r or {}).get("accuracy", 0.0)), 3) for r in records.values()]
        rounds = [(r or {}).get("rounds") for r in records.values()]
        return (
            f"final digest {next(iter(finals.values()))[:12]}… on all {SITES}, "
            f"{result.rounds} merges (site rounds {rounds}), accuracy {accuracy}, {seconds:.0f} s"
        )

    return f"swarm of {SITES} site processes, mixed-dtype model on {device}", check


class Skipped(Exception):
    """A check that cannot run here."""


def skip(reason: str) -> str:
    raise Skipped(reason)


# --------------------------------------------------------------------------- a site
def site_data(rank: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """This site's skewed training shard and the shared test set (fixed synthetic blobs)."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(CLASSES, FEATURES, generator=gen) * 1.5

    def sample(labels: torch.Tensor) -> torch.Tensor:
        return centers[labels] + torch.randn(len(labels), FEATURES, generator=gen)

    test_y = torch.arange(400) % CLASSES
    test_x = sample(test_y)
    own = torch.tensor([c for c in range(CLASSES) if c % SITES == rank])
    pick = torch.randint(0, 10, (480,), generator=gen)  # 8 in 10 of its own classes
    anyone = torch.randint(0, CLASSES, (480,), generator=gen)
    train_y = torch.where(pick < 8, own[pick % len(own)], anyone)
    train_x = sample(train_y)
    return tuple(t.to(device) for t in (train_x, train_y, test_x, test_y))


def run_site(device: torch.device, epochs: int) -> None:
    """One site of the swarm check (started by run_swarm with OPENSWARM_* set)."""
    env = os.environ
    rank = int(env["OPENSWARM_RANK"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    train_x, train_y, test_x, test_y = site_data(rank, device)
    model = SiteModel(100 + rank, float64=device.type != "mps").to(device)
    before = placement(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    cb = SwarmCallback(model, sync_frequency=5, min_peers=int(env.get("MIN_PEERS", SITES)),
                       val_data=[(test_x, test_y)], loss_fn=loss_fn,
                       total_epochs=epochs)  # fmt: skip
    cb.on_train_begin()
    for epoch in range(epochs):
        order = torch.randperm(len(train_y), device=device)
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            opt.zero_grad()
            loss_fn(model(train_x[batch]), train_y[batch]).backward()
            opt.step()
            cb.on_batch_end()
        cb.on_epoch_end(epoch)
    cb.on_train_end()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
    record = {
        "final_digest": cb.final_digest,
        "rounds": cb.rounds,
        "accuracy": accuracy,
        "placement_kept": placement(model) == before,
        "devices": sorted({t.device.type for t in model.state_dict().values()}),
        "dtypes": sorted({str(t.dtype) for t in model.state_dict().values()}),
    }
    Path(env["OPENSWARM_RESULT"]).write_text(json.dumps(record))


# --------------------------------------------------------------------------- main
def available(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return device.type == "cpu"


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index or 0
        return f"{device} ({torch.cuda.get_device_name(index)}, CUDA {torch.version.cuda})"
    return str(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per site")
    parser.add_argument("--no-swarm", action="store_true", help="skip the 3-process swarm")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the swarm")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    parser.add_argument("--site", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.site:
        run_site(device, args.epochs)
        return 0
    if not available(device):
        kind = {"cuda": "CUDA", "mps": "MPS"}.get(device.type, device.type)
        print(f"no {kind} device: nothing checked")
        return 2
    print(f"gpu_check: {describe(device)}, torch {torch.__version__}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    checks = [*torch_checks(device, workdir), *hf_checks(device, workdir)]
    checks.append(merge_check(device, workdir))
    if not args.no_swarm:
        checks.append(swarm_check(device, args.epochs, workdir))
    failed = 0
    timer = threading.Timer(args.timeout, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()  # run_swarm turns SIGINT into a clean stop of the ledger and the sites
    try:
        for name, check in checks:
            try:
                detail = check()
                print(f"PASS  {name}: {detail}", flush=True)
            except Skipped as exc:
                print(f"SKIP  {name}: {exc}", flush=True)
            except Exception as exc:  # a failed check, whatever raised
                failed += 1
                print(f"FAIL  {name}: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc(limit=4, file=sys.stdout)
    finally:
        timer.cancel()
    if failed or args.keep:
        print(f"run folder kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'FAIL' if failed else 'PASS'}: {len(checks) - failed} of {len(checks)} checks "
          f"passed or skipped on {device}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
