"""What the Keras 3 and Keras 2 (`tf.keras`) bindings share; imports no Keras itself.

Both Keras generations offer the same calls used here: `get_weights()` / `set_weights()`,
`model.weights` (variables with a `.name`), `model.metrics` (metrics with `.variables` and
`reset_state()`), `evaluate(..., return_dict=True)` and the callback hooks. A binding module
defines `class SwarmCallback(KerasCallbackMixin, <its keras>.callbacks.Callback)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from openswarm.client.base import SessionView
from openswarm.client.session import SwarmSession
from openswarm.protocol import SwarmError


def named_weights(model: Any) -> dict[str, np.ndarray]:
    """`model.get_weights()` (non-trainable weights included) as an ordered dict named
    `NNN/<variable name>`, e.g. `000/kernel`: the index keeps the order and makes every name
    unique. Layer paths are left out on purpose: Keras numbers unnamed layers per process
    (`dense`, `dense_1`, …), so the same model could be named differently on two sites."""
    return dict(zip(weight_names(model.weights), model.get_weights(), strict=True))


def weight_names(weights: list[Any]) -> list[str]:
    """`NNN/<short name>` per variable; Keras 2's `dense_1/kernel:0` becomes `kernel`."""
    width = max(3, len(str(len(weights))))
    return [f"{i:0{width}d}/{_short_name(w.name)}" for i, w in enumerate(weights)]


def _short_name(name: str) -> str:
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


class KerasModel:
    """The model adapter of a Keras model (either generation): `get_weights()` by name,
    `set_weights()`, and `evaluate()` on `val_data` (loss and the first compiled metric).

    `source` gives the model when it is needed: a callback's `model` property, which on JAX
    first syncs the training state."""

    def __init__(
        self, source: Callable[[], Any], val_data: Any = None, val_batch_size: int | None = None
    ) -> None:
        check_val_data(val_data)
        self.source = source
        self.val_data = val_data
        self.val_batch_size = val_batch_size

    def _model(self) -> Any:
        model = self.source()
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

    def learning_rate(self) -> float | None:
        """The compiled optimizer's learning rate now (for the drift corrections), if
        readable; SGD's momentum counts as for torch (lr over 1 - momentum)."""
        optimizer = getattr(self.source(), "optimizer", None)
        try:
            lr = float(np.asarray(optimizer.learning_rate))
            momentum = float(np.asarray(getattr(optimizer, "momentum", 0.0) or 0.0))
        except (AttributeError, TypeError, ValueError):
            return None
        if not lr > 0:
            return None
        return lr / (1.0 - momentum) if 0 <= momentum < 1 else lr

    def evaluate(self) -> tuple[float | None, float | None]:
        data = self.val_data
        if data is None:
            return None, None
        model = self._model()
        was_training = getattr(model, "training", None)  # torch backend: a torch Module
        with _fit_metrics_kept(model):
            try:
                if isinstance(data, tuple):
                    x, y, *weights = data
                    results = model.evaluate(
                        x, y, sample_weight=weights[0] if weights else None,
                        batch_size=self.val_batch_size, verbose=0, return_dict=True,
                    )  # fmt: skip
                else:
                    results = model.evaluate(data, verbose=0, return_dict=True)
            finally:
                if was_training is True:
                    model.train()
        loss = results.get("loss")
        metric = next((v for k, v in results.items() if k != "loss" and np.ndim(v) == 0), None)
        return (
            None if loss is None else float(loss),
            None if metric is None else float(metric),
        )


class _fit_metrics_kept:
    """`evaluate()` shares the compiled metrics with `fit()`: keep fit's running values.

    Metrics are built lazily (on TensorFlow and in Keras 2 the first `evaluate` may create
    their variables): a metric that had no variables before is reset afterwards, the others
    get their saved values back."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.saved = [(v, np.array(v.numpy())) for v in _metric_variables(self.model)]

    def __exit__(self, *exc: object) -> None:
        before = {id(v) for v, _ in self.saved}
        for metric in self.model.metrics:
            if metric.variables and not any(id(v) in before for v in metric.variables):
                metric.reset_state()
        for variable, value in self.saved:
            variable.assign(value)


def _metric_variables(model: Any) -> list[Any]:
    return [v for m in model.metrics for v in m.variables]


class KerasCallbackMixin(SessionView):
    """The callback's constructor and hooks, for either Keras generation: mixed in before
    that Keras's `Callback`, with `model_class` its `Model`. The model adapter is
    `KerasModel` (`cb.adapter`); `cb.set_params` stays Keras's own (fit's settings).

    `SwarmCallback(sync_frequency, min_peers, *, model=None, val_data=None,
    val_batch_size=None, **options)`; `options` are `SwarmSession`'s.
    """

    model_class: type
    model: Any
    params: dict[str, Any]

    def __init__(
        self,
        sync_frequency: int,
        min_peers: int,
        *,
        model: Any = None,
        val_data: Any = None,
        val_batch_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()  # the Keras Callback's
        if model is not None:
            if not isinstance(model, self.model_class):
                raise SwarmError(
                    f"model must be a {self.model_class.__module__.split('.')[0]} Model, "
                    f"got {type(model).__name__}"
                )
            self.set_model(model)  # type: ignore[attr-defined]
        self.keras = KerasModel(lambda: self.model, val_data, val_batch_size)
        self.session = SwarmSession(
            self.keras, sync_frequency=sync_frequency, min_peers=min_peers, **options
        )
        self.error: SwarmError | None = None

    @property
    def val_data(self) -> Any:
        return self.keras.val_data

    @property
    def val_batch_size(self) -> int | None:
        return self.keras.val_batch_size

    # --- Keras hooks ----------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.error = None
        if self.session.total_epochs is None and self.params:
            self.session.total_epochs = self.params.get("epochs")
        try:
            self.session.train_begin()
        except BaseException:
            self.session.close()
            raise

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.error is not None:
            return
        try:
            self.session.batch_end()
        except SwarmError as exc:
            self.error = exc
            self.logger.error("the swarm cannot go on: %s; stopping training", exc)
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.session.epoch_end(epoch)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.error is not None:
            self.session.close()
            raise self.error
        self.session.train_end()


def check_val_data(val_data: Any) -> None:
    if isinstance(val_data, tuple) and len(val_data) not in (2, 3):
        raise SwarmError(
            "val_data as a tuple must be (x, y) or (x, y, sample_weight), "
            f"got {len(val_data)} items"
        )
    if isinstance(val_data, list):
        raise SwarmError("val_data must be (x, y), (x, y, sample_weight) or a dataset, not a list")
