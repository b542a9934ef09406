"""The PyTorch binding: `SwarmCallback` for an ordinary training loop.

Parameters may live on any device (CPU, CUDA, MPS, or spread over several) in any codec
dtype (float16, bfloat16, float32, float64, integer and bool buffers): they are copied to
the host to be encoded, and merged values are copied back onto each tensor's own device
and dtype, bit for bit. `SiteGroup` lets the processes of one `torch.distributed` job
(DDP, `accelerate launch`) take part as one site: see `openswarm.client.hf`.
"""

from __future__ import annotations

import importlib.util
import struct
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from openswarm.client.base import LoopCallback
from openswarm.client.drift import Drift
from openswarm.client.privacy import SgdSteps
from openswarm.client.torch_dp import plain_module, sgd_steps
from openswarm.codec import CodecError, to_torch
from openswarm.protocol import SwarmError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


class DriftHooks:
    """`install_drift` / `remove_drift` for the adapter of a torch module: the drift
    correction added to the synced parameters' gradients (`hook_drift`)."""

    _hooks: list[Any]

    def _drift_target(self) -> tuple[torch.nn.Module, Iterable[str]]:
        """The module and the names its synced tensors go by."""
        raise NotImplementedError

    def install_drift(self, drift: Drift) -> bool:
        """Hook the parameters; False if none is synced under its own name."""
        self.remove_drift()
        self._hooks = hook_drift(*self._drift_target(), drift)
        return bool(self._hooks)

    def remove_drift(self) -> None:
        """Take the gradient hooks off (training is over)."""
        for handle in getattr(self, "_hooks", []):
            handle.remove()
        self._hooks = []


class TorchModel(DriftHooks):
    """The model adapter of a `torch.nn.Module`: its whole state_dict (buffers included) on
    any device; `evaluate()` averages `loss_fn` (and `metric_fn`) over `val_data`'s
    `(x, y)` batches. `optimizer` (optional) tells the drift corrections the local learning
    rate."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        val_data: Iterable[Any] | None = None,
        loss_fn: LossFn | str | None = None,
        loss_args: Mapping[str, Any] | None = None,
        metric_fn: MetricFn | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise SwarmError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        model = plain_module(model)  # Opacus's wrapper: sync the plain model's names
        require_bfloat16_support(model.state_dict())
        self.module = model
        self.val_data = val_data
        self.loss_fn = _loss(loss_fn, loss_args)
        self.metric_fn = metric_fn
        self.optimizer = optimizer

    def get_params(self) -> dict[str, torch.Tensor]:
        return host_tensors(self.module.state_dict())

    def _drift_target(self) -> tuple[torch.nn.Module, Iterable[str]]:
        return self.module, self.module.state_dict().keys()

    def dp_sgd_steps(self) -> SgdSteps | None:
        """DP-SGD's noise, sample rate and steps so far, if the optimizer runs it
        (`openswarm.torch.make_private`)."""
        return sgd_steps(self.optimizer)

    def learning_rate(self) -> float | None:
        """The optimizer's steady step size (lr, over 1 - momentum for SGD), if given."""
        return optimizer_step_size(self.optimizer)

    def set_params(self, params: Mapping[str, Any]) -> None:
        tensors = matching_tensors(self.module.state_dict(), params)
        with torch.no_grad():  # copy_ onto each tensor's own device, dtype unchanged
            self.module.load_state_dict(tensors, strict=True)

    def evaluate(self) -> tuple[float | None, float | None]:
        if self.val_data is None or self.loss_fn is None:
            return None, None
        model = self.module
        was_training = model.training
        model.eval()
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        total_loss = total_metric = 0.0
        count = 0
        try:
            with torch.no_grad():
                for x, y in self.val_data:
                    x, y = x.to(device), y.to(device)
                    out = model(x)
                    n = len(y)
                    total_loss += float(self.loss_fn(out, y)) * n
                    if self.metric_fn is not None:
                        total_metric += float(self.metric_fn(out, y)) * n
                    count += n
        finally:
            model.train(was_training)
        if count == 0:
            return None, None
        return total_loss / count, (total_metric / count if self.metric_fn else None)


class SwarmCallback(LoopCallback):
    """Sync a `torch.nn.Module`'s whole state_dict (buffers included) with the swarm.

    ```python
    cb = SwarmCallback(model, sync_frequency=20, min_peers=3, val_data=val_loader,
                       loss_fn=torch.nn.CrossEntropyLoss())
    cb.on_train_begin()
    for epoch in range(epochs):
        for x, y in loader:
            ...; optimizer.step(); cb.on_batch_end()
        cb.on_epoch_end(epoch)
    cb.on_train_end()   # model now holds the final swarm model, same on every site
    ```

    A `LoopCallback` over `TorchModel`; other keywords are `SwarmSession`'s.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        sync_frequency: int,
        min_peers: int,
        *,
        val_data: Iterable[Any] | None = None,
        loss_fn: LossFn | str | None = None,
        loss_args: Mapping[str, Any] | None = None,
        metric_fn: MetricFn | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        **options: Any,
    ) -> None:
        adapter = TorchModel(
            model, val_data=val_data, loss_fn=loss_fn, loss_args=loss_args, metric_fn=metric_fn,
            optimizer=optimizer,
        )  # fmt: skip
        super().__init__(adapter, sync_frequency, min_peers, **options)
        self.model = model


def hook_drift(module: torch.nn.Module, synced: Iterable[str], drift: Drift) -> list[Any]:
    """Make backward add `drift`'s correction (``mu*(w - w_merged) + c - c_i``) to the
    gradient of each trainable parameter of `module` that is synced under its own name;
    the hooks' handles (none if no parameter is, e.g. PEFT adapters synced under other
    names). A loss scaler (fp16 `GradScaler`) or gradient accumulation would scale the
    correction: train without them."""
    names = set(synced)
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad and n in names]
    if not params:
        return []
    drift.trainable = frozenset(n for n, _ in params)
    hooks = _DriftHooks(drift)
    if drift.control_variates:
        drift.gradient_means = hooks.gradient_means
    return [param.register_hook(hooks.for_param(name, param)) for name, param in params]


class _DriftHooks:
    """Gradient hooks holding the anchor and ``c - c_i`` as tensors on each parameter's
    device, refreshed when the drift state changes (a merge was loaded). With control
    variates they also sum the raw gradients since that merge: their mean is the site's
    new control variate (the quantity SCAFFOLD's option II estimates from the step)."""

    def __init__(self, drift: Drift) -> None:
        self.drift = drift
        self.version = -1
        self.anchor: dict[str, torch.Tensor] = {}
        self.shift: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def gradient_means(self) -> dict[str, np.ndarray]:
        """Each hooked parameter's mean raw gradient since the last merge was loaded."""
        if self.version != self.drift.version:
            return {}
        return {n: (s / self.counts[n]).cpu().numpy() for n, s in self.sums.items()}

    def for_param(self, name: str, param: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def add_correction(grad: torch.Tensor) -> torch.Tensor:
            if self.version != self.drift.version:
                self.anchor.clear()
                self.shift.clear()
                self.sums.clear()
                self.counts.clear()
                self.version = self.drift.version
            drift = self.drift
            if name not in drift.anchor:
                return grad
            if drift.control_variates:
                raw = grad.detach().float()
                if name in self.sums:
                    self.sums[name] += raw
                    self.counts[name] += 1
                else:
                    self.sums[name], self.counts[name] = raw.clone(), 1
            if name not in self.anchor:
                self.anchor[name] = torch.from_numpy(drift.anchor[name]).to(param.device)
                if drift.control_variates and name in drift.swarm_c:
                    shift = drift.swarm_c[name] - drift.site_c.get(name, 0.0)
                    self.shift[name] = torch.from_numpy(shift).to(param.device)
            extra = torch.zeros_like(grad, dtype=torch.float32)
            if drift.proximal_mu:
                extra += drift.proximal_mu * (param.detach().float() - self.anchor[name])
            if name in self.shift:
                extra += self.shift[name]
            return grad + extra.to(grad.dtype)

        return add_correction


def optimizer_step_size(optimizer: Any) -> float | None:
    """A torch optimizer's first group's lr, over (1 - momentum) for SGD with momentum;
    None without one."""
    if optimizer is None or not getattr(optimizer, "param_groups", None):
        return None
    group = optimizer.param_groups[0]
    lr = float(group.get("lr", 0.0))
    momentum = float(group.get("momentum", 0.0) or 0.0)
    if lr <= 0:
        return None
    return lr / (1.0 - momentum) if 0 <= momentum < 1 else lr


def _loss(loss_fn: LossFn | str | None, args: Mapping[str, Any] | None) -> LossFn | None:
    if loss_fn is None or callable(loss_fn):
        return loss_fn
    cls = getattr(torch.nn, str(loss_fn), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise SwarmError(f"loss function {loss_fn!r} is not a torch.nn loss class name")
    return cls(**dict(args or {}))


# --- parameters on any device, in any dtype ------------------------------------------------
def host_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached host (CPU) tensors of ``state``, dtypes kept; device tensors are copied, host
    ones shared. Sharded (DTensor) and meta tensors raise SwarmError."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if type(tensor).__name__ == "DTensor":
            raise SwarmError(
                f"tensor {name!r} is sharded (DTensor, from FSDP or tensor parallelism): a site "
                "must hold whole parameters; train with data parallelism (DDP) instead"
            )
        if tensor.is_meta:
            raise SwarmError(
                f"tensor {name!r} is on the meta device (offloaded or not materialised): "
                "load the model's weights onto a real device before syncing it"
            )
        out[name] = tensor.detach().cpu()
    return out


def matching_tensors(
    expected: Mapping[str, torch.Tensor], params: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """``params`` (numpy arrays, ``ml_dtypes`` bfloat16 too, or tensors) as host tensors, in
    ``expected``'s order, after checking they have exactly its names, shapes and dtypes:
    loading them then copies bit for bit. SwarmError names the first mismatch."""
    missing = [n for n in expected if n not in params]
    extra = [n for n in params if n not in expected]
    if missing or extra:
        raise SwarmError(
            f"parameters do not match the model: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    out: dict[str, torch.Tensor] = {}
    for name, target in expected.items():
        try:
            value = to_torch(params[name])
        except CodecError as exc:
            raise SwarmError(f"parameter {name!r}: {exc}") from None
        if value.dtype != target.dtype or value.shape != target.shape:
            raise SwarmError(
                f"parameter {name!r} is {value.dtype} {tuple(value.shape)} but the model holds "
                f"{target.dtype} {tuple(target.shape)}"
            )
        out[name] = value
    return out


def require_bfloat16_support(state: Mapping[str, torch.Tensor]) -> None:
    """SwarmError unless ``ml_dtypes`` is installed when ``state`` holds bfloat16 tensors (the
    swarm runtime decodes parameters as numpy arrays, and numpy needs it for bfloat16)."""
    if importlib.util.find_spec("ml_dtypes") is not None:
        return
    for name, tensor in state.items():
        if tensor.dtype == torch.bfloat16:
            raise SwarmError(
                f"tensor {name!r} is bfloat16, which the swarm runtime holds as numpy arrays "
                "only with the ml_dtypes package: pip install ml_dtypes"
            )


# --- several processes as one site ---------------------------------------------------------
NOTHING, LOADED, FAILED = 0, 1, 2
_HEADER = struct.Struct("<qqqq32s")  # status, data bytes, rounds, sync_frequency, digest


@dataclass(frozen=True)
class GroupMessage:
    """What the main process tells the others after a step: whether it failed or loaded
    new parameters (``data``, encoded), its round count and sync interval, and (after the
    last step) the final model's digest."""

    status: int
    rounds: int
    sync_frequency: int
    digest: str | None = None
    data: bytes | memoryview | None = None


@dataclass(frozen=True)
class SiteGroup:
    """The processes of a `torch.distributed` job (DDP, `accelerate launch`, torchrun) that
    train one replica of the model each, and take part in the swarm as one site: global
    rank 0 talks to the swarm, then broadcasts to the others what it loaded.

    Every process must call `send`/`receive` at the same steps (collectives). Messages go
    over the default process group, on `device`: the CPU under gloo, else the process's
    accelerator (NCCL needs CUDA tensors). Nothing is pickled: a fixed-size header, then
    the encoded parameters as bytes.
    """

    rank: int
    size: int
    device: torch.device

    @classmethod
    def current(cls, device: torch.device | str | None = None) -> SiteGroup | None:
        """The default process group if it has several processes, else None. ``device``:
        this process's accelerator (e.g. `TrainingArguments.device`), used when the
        backend cannot carry CPU tensors."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        backend = str(dist.get_backend()).lower()
        if "gloo" in backend or "mpi" in backend:
            where = torch.device("cpu")
        elif device is not None and torch.device(device).type != "cpu":
            where = torch.device(device)
        else:
            where = torch.device("cuda", torch.cuda.current_device())
        return cls(dist.get_rank(), dist.get_world_size(), where)

    @property
    def is_main(self) -> bool:
        """Whether this is the process that talks to the swarm (global rank 0)."""
        return self.rank == 0

    def send(self, message: GroupMessage) -> None:
        """Broadcast ``message`` from the main process."""
        data = b"" if message.data is None else message.data
        header = _HEADER.pack(
            message.status, len(data), message.rounds, message.sync_frequency,
            bytes.fromhex(message.digest) if message.digest else bytes(32),
        )  # fmt: skip
        self._broadcast(header, len(header))
        if data:
            self._broadcast(data, len(data))

    def receive(self) -> GroupMessage:
        """The main process's next message (on the other processes)."""
        header = self._broadcast(None, _HEADER.size)
        status, size, rounds, frequency, raw = _HEADER.unpack(bytes(header))
        data = self._broadcast(None, size) if size else None
        digest = raw.hex() if any(raw) else None
        return GroupMessage(status, rounds, frequency, digest, data)

    def _broadcast(self, data: bytes | memoryview | None, size: int) -> memoryview:
        if data is not None:
            with warnings.catch_warnings():  # read-only bytes: a broadcast's source is only read
                warnings.simplefilter("ignore", UserWarning)
                buffer = torch.frombuffer(data, dtype=torch.uint8).to(self.device)
        else:
            buffer = torch.empty(size, dtype=torch.uint8, device=self.device)
        torch.distributed.broadcast(buffer, src=0)
        return memoryview(buffer.cpu().numpy())
