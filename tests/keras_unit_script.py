"""Checks of the Keras binding on one Keras flavour, in a process of its own (a backend is
fixed once Keras is imported): KERAS_BACKEND, or TF_USE_LEGACY_KERAS=1 for Keras 2.

Exits 0 when every check holds; an AssertionError names the one that failed."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import skewed_digits

from openswarm.codec import digest
from openswarm.node.settings import NetworkConfig

if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
    from tensorflow import keras

    from openswarm.client.tf_keras import SwarmCallback
else:
    import keras

    from openswarm.keras import SwarmCallback


def build(seed: int):  # a keras.Model of either generation
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def metric_values(model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for m in model.metrics for v in m.variables]


def main() -> None:
    x, y = skewed_digits.held_out()
    network = NetworkConfig(ledger=("127.0.0.1:1",), identity=Path(tempfile.mkdtemp()))
    model = build(0)
    cb = SwarmCallback(4, 1, model=model, val_data=(x, y), val_batch_size=64, network=network)
    assert isinstance(cb, keras.callbacks.Callback)

    # A freshly compiled model: its metrics do not exist yet (on TensorFlow and in Keras 2 the
    # first evaluate creates them), as when the initial sync evaluates in on_train_begin.
    loss, metric = cb.adapter.evaluate()
    assert loss is not None and loss > 0 and metric is not None and 0 <= metric <= 1
    assert all(not v.any() for v in metric_values(model)), "evaluate left its counts behind"

    model.fit(x[:64], y[:64], epochs=1, verbose=0)
    loss, metric = cb.adapter.evaluate()
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    assert abs(loss - expected["loss"]) <= 1e-5 * expected["loss"], (loss, expected)
    assert abs(metric - expected["accuracy"]) <= 1e-6, (metric, expected)
    model.evaluate(x[:32], y[:32], verbose=0)  # metrics now hold some running values
    before = metric_values(model)
    cb.adapter.evaluate()
    after = metric_values(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)), "metrics moved"

    params = cb.adapter.get_params()
    assert list(params)[:3] == ["000/kernel", "001/bias", "002/gamma"], list(params)
    assert any(k.endswith("/moving_mean") for k in params)  # non-trainable weights too
    other = build(1)
    receiver = SwarmCallback(4, 1, model=other, network=network)
    receiver.adapter.set_params(params)
    assert digest(receiver.adapter.get_params()) == digest(params), "set_params is not exact"
    print("ok", keras.__name__, file=sys.stderr)


if __name__ == "__main__":
    main()
