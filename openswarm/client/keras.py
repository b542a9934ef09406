"""The Keras 3 binding: a `keras.callbacks.Callback` that trains with the swarm.

Only the Keras 3 API is used (`get_weights()` / `set_weights()`, `evaluate()`), so the
callback works on the TensorFlow, JAX and PyTorch backends alike. When neither
`KERAS_BACKEND` nor `~/.keras/keras.json` chooses a backend other than TensorFlow, and
TensorFlow is not installed, importing this module selects an installed one (torch, then
jax) before Keras is imported.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def choose_backend() -> str | None:
    """Set `KERAS_BACKEND` to an installed backend where Keras would pick a missing
    TensorFlow; returns the backend set, or None when nothing was changed."""
    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND"):
        return None
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        configured = json.loads((home / "keras.json").read_text(encoding="utf-8"))["backend"]
    except (OSError, ValueError, KeyError, TypeError):
        configured = "tensorflow"
    if configured != "tensorflow" or importlib.util.find_spec("tensorflow") is not None:
        return None
    for name in ("torch", "jax"):
        if importlib.util.find_spec(name) is not None:
            os.environ["KERAS_BACKEND"] = name
            return name
    return None


choose_backend()

import keras  # noqa: E402 - after choosing the backend

from openswarm.client.base import SwarmCallbackBase  # noqa: E402
from openswarm.node.peer import SwarmError  # noqa: E402

log = logging.getLogger(__name__)


def named_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """`model.get_weights()` (non-trainable weights included) as an ordered dict named
    `NNN/<variable name>`, e.g. `000/kernel`: the index keeps the order and makes every name
    unique. Layer paths are left out on purpose: Keras numbers unnamed layers per process
    (`dense`, `dense_1`, …), so the same model could be named differently on two sites."""
    weights = model.weights
    return dict(zip(weight_names(weights), model.get_weights(), strict=True))


def weight_names(weights: list[Any]) -> list[str]:
    width = max(3, len(str(len(weights))))
    return [f"{i:0{width}d}/{w.name}" for i, w in enumerate(weights)]


class SwarmCallback(keras.callbacks.Callback):
    """Swarm learning for `model.fit`: `model.fit(x, y, callbacks=[cb])` is all.

    ```python
    cb = SwarmCallback(sync_frequency=20, min_peers=3, val_data=(x_val, y_val))
    model.fit(x, y, epochs=5, callbacks=[cb])   # model then holds the final swarm model
    ```

    `on_train_begin` joins the swarm and loads its model (initial sync), every
    `sync_frequency` training batches merge with the swarm, `on_train_end` does the final
    sync. `val_data` — `(x, y)`, `(x, y, sample_weight)` or a dataset — is evaluated with
    `model.evaluate` (loss and the first compiled metric) to report progress and to drive
    adaptive sync. Other keywords are `SwarmCallbackBase`'s (merge_method, node_weight, …).

    If the swarm cannot go on during training (a `SwarmError` in a sync), the callback logs
    the reason, sets `model.stop_training` so `fit` ends after the current batch, and raises
    that error from `on_train_end`: `fit` fails with it rather than return a model that
    silently left the swarm.
    """

    def __init__(
        self,
        sync_frequency: int,
        min_peers: int,
        *,
        model: keras.Model | None = None,
        val_data: Any = None,
        val_batch_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if model is not None:
            if not isinstance(model, keras.Model):
                raise SwarmError(f"model must be a keras.Model, got {type(model).__name__}")
            self.set_model(model)
        _check_val_data(val_data)
        self.val_data = val_data
        self.val_batch_size = val_batch_size
        self.swarm = _KerasSite(self, sync_frequency=sync_frequency, min_peers=min_peers, **options)
        self.error: SwarmError | None = None

    # --- what the swarm exposes -----------------------------------------------------------
    @property
    def logger(self) -> logging.Logger:
        return self.swarm.logger

    @property
    def final_digest(self) -> str | None:
        return self.swarm.final_digest

    @property
    def rounds(self) -> int:
        return self.swarm.rounds

    @property
    def intervals(self) -> list[tuple[int, int]]:
        return self.swarm.intervals

    @property
    def sync_frequency(self) -> int:
        return self.swarm.sync_frequency

    @property
    def round_timings(self) -> list[dict[str, float]]:
        return self.swarm.round_timings

    # --- Keras hooks ----------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.error = None
        if self.swarm.total_epochs is None and self.params:
            self.swarm.total_epochs = self.params.get("epochs")
        try:
            self.swarm.on_train_begin()
        except BaseException:
            self._close_peer()
            raise

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.error is not None:
            return
        try:
            self.swarm.on_batch_end()
        except SwarmError as exc:
            self.error = exc
            self.swarm.logger.error("the swarm cannot go on: %s; stopping training", exc)
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.swarm.on_epoch_end(epoch)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.error is not None:
            self._close_peer()
            raise self.error
        self.swarm.on_train_end()

    def _close_peer(self) -> None:
        if self.swarm.peer is not None:
            self.swarm.peer.close()


class _KerasSite(SwarmCallbackBase):
    """The platform part: read, load and evaluate the callback's Keras model."""

    def __init__(self, callback: SwarmCallback, **options: Any) -> None:
        super().__init__(**options)
        self.callback = callback

    def _model(self) -> keras.Model:
        # through the Callback's property: on JAX it first syncs the training state
        model = self.callback.model
        if model is None:
            raise SwarmError("no model: use the callback in model.fit(...) or pass model=")
        return model

    def get_params(self) -> dict[str, np.ndarray]:
        return named_weights(self._model())

    def set_params(self, params: Mapping[str, Any]) -> None:
        model = self._model()
        weights = model.weights
        names = weight_names(weights)
        missing = [n for n in names if n not in params]
        extra = [n for n in params if n not in set(names)]
        if missing or extra:
            raise SwarmError(
                f"parameters do not fit the model: missing {missing[:5]}, unexpected {extra[:5]}"
            )
        values = []
        for name, weight in zip(names, weights, strict=True):
            value = np.asarray(params[name])
            if tuple(value.shape) != tuple(weight.shape):
                raise SwarmError(
                    f"parameter {name} has shape {value.shape}, the model's {tuple(weight.shape)}"
                )
            values.append(value if value.flags.writeable else value.copy())
        model.set_weights(values)

    def evaluate(self) -> tuple[float | None, float | None]:
        data = self.callback.val_data
        if data is None:
            return None, None
        model = self._model()
        # evaluate() shares the compiled metrics with fit(): keep fit's running values
        saved = [np.array(v.numpy()) for v in model.metrics_variables]
        was_training = getattr(model, "training", None)  # torch backend: a torch Module
        try:
            if isinstance(data, tuple):
                x, y, *weights = data
                results = model.evaluate(
                    x, y, sample_weight=weights[0] if weights else None,
                    batch_size=self.callback.val_batch_size, verbose=0, return_dict=True,
                )  # fmt: skip
            else:
                results = model.evaluate(data, verbose=0, return_dict=True)
        finally:
            for variable, value in zip(model.metrics_variables, saved, strict=True):
                variable.assign(value)
            if was_training is True:
                model.train()
        loss = results.get("loss")
        metric = next((v for k, v in results.items() if k != "loss" and np.ndim(v) == 0), None)
        return (
            None if loss is None else float(loss),
            None if metric is None else float(metric),
        )


def _check_val_data(val_data: Any) -> None:
    if isinstance(val_data, tuple) and len(val_data) not in (2, 3):
        raise SwarmError(
            "val_data as a tuple must be (x, y) or (x, y, sample_weight), "
            f"got {len(val_data)} items"
        )
    if isinstance(val_data, list):
        raise SwarmError("val_data must be (x, y), (x, y, sample_weight) or a dataset, not a list")
