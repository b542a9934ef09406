"""The PyTorch binding: `SwarmCallback` for an ordinary training loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from openswarm.client.base import SwarmCallbackBase
from openswarm.node.peer import SwarmError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


class SwarmCallback(SwarmCallbackBase):
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
        **options: Any,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise SwarmError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        super().__init__(sync_frequency=sync_frequency, min_peers=min_peers, **options)
        self.model = model
        self.val_data = val_data
        self.loss_fn = _loss(loss_fn, loss_args)
        self.metric_fn = metric_fn

    def get_params(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu() for name, t in self.model.state_dict().items()}

    def set_params(self, params: Mapping[str, Any]) -> None:
        tensors = {
            name: value if isinstance(value, torch.Tensor) else torch.from_numpy(np.array(value))
            for name, value in params.items()
        }
        with torch.no_grad():
            self.model.load_state_dict(tensors, strict=True)

    def evaluate(self) -> tuple[float | None, float | None]:
        if self.val_data is None or self.loss_fn is None:
            return None, None
        was_training = self.model.training
        self.model.eval()
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        total_loss = total_metric = 0.0
        count = 0
        with torch.no_grad():
            for x, y in self.val_data:
                x, y = x.to(device), y.to(device)
                out = self.model(x)
                n = len(y)
                total_loss += float(self.loss_fn(out, y)) * n
                if self.metric_fn is not None:
                    total_metric += float(self.metric_fn(out, y)) * n
                count += n
        self.model.train(was_training)
        if count == 0:
            return None, None
        return total_loss / count, (total_metric / count if self.metric_fn else None)


def _loss(loss_fn: LossFn | str | None, args: Mapping[str, Any] | None) -> LossFn | None:
    if loss_fn is None or callable(loss_fn):
        return loss_fn
    cls = getattr(torch.nn, str(loss_fn), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise SwarmError(f"loss function {loss_fn!r} is not a torch.nn loss class name")
    return cls(**dict(args or {}))
