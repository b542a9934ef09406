"""HPE Swarm Learning's PyTorch API: `SwarmCallback` for an ordinary training loop.

```python
from swarmlearning.pyt import SwarmCallback
cb = SwarmCallback(syncFrequency=20, minPeers=3, model=model, adsValData=val_loader,
                   lossFunction="CrossEntropyLoss", metricFunction="MulticlassAccuracy",
                   metricFunctionArgs={"num_classes": 10})
cb.on_train_begin(); ...; cb.on_batch_end(); ...; cb.on_epoch_end(epoch); ...; cb.on_train_end()
```

HPE's keywords map onto `openswarm.torch.SwarmCallback`. `adsValData` is a `DataLoader` of
`(x, y)` batches (a `Dataset` is batched by `adsValBatchSize`, default 32);
`lossFunction` names a `torch.nn` loss class, `metricFunction` a `torchmetrics` class, each
built with its `…Args` dict.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from openswarm import DEFAULT_CONTRACT
from openswarm.client.torch import SwarmCallback as _TorchSwarmCallback
from swarmlearning._compat import hpe_options

DEFAULT_VAL_BATCH_SIZE = 32
METRIC_PACKAGES = ("classification", "regression", "aggregation", "clustering", "nominal")


class SwarmCallback(_TorchSwarmCallback):
    """HPE's `SwarmCallback(syncFrequency, minPeers, trainingContract, **kwargs)` for PyTorch."""

    def __init__(
        self,
        syncFrequency: int,  # HPE's camelCase names
        minPeers: int,
        trainingContract: str = DEFAULT_CONTRACT,
        **kwargs: Any,
    ) -> None:
        options = hpe_options(syncFrequency, minPeers, trainingContract, kwargs, "pyt")
        model = options.pop("model", None)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                "swarmlearning.pyt.SwarmCallback needs model=<the torch.nn.Module to sync>, "
                f"got {type(model).__name__}"
            )
        val_data = _val_loader(options.pop("val_data", None), options.pop("val_batch_size", None))
        metric_fn = _metric_fn(options.pop("metric_fn", None), options.pop("metric_args", None))
        if "loss_args" in options and "loss_fn" not in options:
            raise ValueError("lossFunctionArgs given without lossFunction")
        if options["use_adaptive_sync"] and (val_data is None or "loss_fn" not in options):
            raise ValueError(
                "useAdaptiveSync=True decides from validation loss: give adsValData and "
                "lossFunction"
            )
        super().__init__(
            model,
            options.pop("sync_frequency"),
            options.pop("min_peers"),
            val_data=val_data,
            metric_fn=metric_fn,
            **options,
        )


def _val_loader(data: Any, batch_size: int | None) -> Any:
    """A DataLoader as it is; a Dataset or an `(x, y)` pair of tensors batched."""
    if data is None or isinstance(data, DataLoader):
        return data
    if isinstance(data, tuple) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        data = torch.utils.data.TensorDataset(*data)
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size or DEFAULT_VAL_BATCH_SIZE)
    raise ValueError(
        f"adsValData for PyTorch must be a DataLoader (or a Dataset), got {type(data).__name__}"
    )


def _metric_fn(
    name: Any, args: Mapping[str, Any] | None
) -> Callable[[torch.Tensor, torch.Tensor], float] | None:
    """A torchmetrics class name (and its kwargs) as `fn(output, target) -> float`."""
    if name is None:
        if args is not None:
            raise ValueError("metricFunctionArgs given without metricFunction")
        return None
    if callable(name) and not isinstance(name, type):
        return name  # already a function of (output, target)
    try:
        import torchmetrics
    except ImportError as exc:
        raise ImportError("metricFunction needs torchmetrics: pip install torchmetrics") from exc
    cls = _torchmetrics_class(str(name))
    metric = cls(**dict(args or {})) if cls is not None else None
    if not isinstance(metric, torchmetrics.Metric):
        raise ValueError(f"metricFunction {name!r} is not a torchmetrics metric class name")

    def compute(output: torch.Tensor, target: torch.Tensor) -> float:
        metric.to(output.device)
        metric.reset()
        metric.update(output, target)
        value = metric.compute()
        metric.reset()
        return float(value)

    return compute


def _torchmetrics_class(name: str) -> type | None:
    """`name` in torchmetrics or one of its task packages (e.g. `MulticlassAccuracy`)."""
    for package in ("", *METRIC_PACKAGES):
        try:
            module = importlib.import_module(f"torchmetrics.{package}".rstrip("."))
        except ImportError:
            continue
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            return cls
    return None
