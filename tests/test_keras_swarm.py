"""The Keras 3 binding on the torch backend: real peer processes, a real ledger, real data.

The same checks on TensorFlow, JAX and Keras 2 run in `tests/backends/`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import skewed_digits  # noqa: E402
from keras_runs import check_keras_swarm  # noqa: E402

from openswarm.client.drift import Drift  # noqa: E402
from openswarm.client.keras_common import KerasModel  # noqa: E402
from openswarm.codec import digest  # noqa: E402
from openswarm.keras import SwarmCallback  # noqa: E402
from openswarm.ledger.local import LocalLedger  # noqa: E402
from openswarm.node.peer import SwarmError  # noqa: E402
from openswarm.node.settings import NetworkConfig  # noqa: E402


def _model(seed: int = 0) -> keras.Model:
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


@pytest.mark.slow
def test_three_keras_sites_agree_and_beat_training_alone(tmp_path: Path) -> None:
    # TensorFlow, JAX and Keras 2: tests/backends, in the environment that has them
    check_keras_swarm(tmp_path / "run", "torch")


@pytest.mark.slow
def test_three_keras_sites_correcting_drift_agree_and_beat_training_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROXIMAL_MU", "0.01")  # the sites inherit the environment
    monkeypatch.setenv("CONTROL_VARIATES", "1")
    check_keras_swarm(tmp_path / "run", "torch")


def test_the_compiled_optimizers_learning_rate_steps_the_drift_correction() -> None:
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5), loss="mse")
    adapter = KerasModel(lambda: model)
    assert adapter.learning_rate() == pytest.approx(0.2)  # lr / (1 - momentum)
    drift = Drift(proximal_mu=0.5)
    anchor = adapter.get_params()
    drift.loaded(anchor)
    moved = {n: v + 1.0 for n, v in anchor.items()}
    adapter.set_params(moved)
    adapter.set_params(drift.decoupled(adapter.get_params(), 0.2))
    for name, value in adapter.get_params().items():
        if name in drift.anchor:  # float weights: w - lr * mu * (w - anchor)
            np.testing.assert_allclose(value, moved[name] - 0.2 * 0.5 * 1.0, rtol=1e-5)


def test_weights_are_named_in_order_and_load_exactly(tmp_path: Path) -> None:
    from openswarm.client.keras import KerasModel, named_weights

    model, other = _model(0), _model(1)
    params = named_weights(model)
    assert list(params)[:3] == ["000/kernel", "001/bias", "002/gamma"]
    assert any(k.endswith("/moving_mean") for k in params)  # non-trainable weights too
    network = NetworkConfig(ledger=("127.0.0.1:1",), identity=tmp_path)
    cb = SwarmCallback(4, 1, model=other, network=network)
    assert isinstance(cb, keras.callbacks.Callback) and isinstance(cb.adapter, KerasModel)
    cb.adapter.set_params(params)
    assert digest(cb.adapter.get_params()) == digest(params)
    bad = dict(params)
    bad["001/bias"] = np.zeros(3, np.float32)
    with pytest.raises(SwarmError, match="shape"):
        cb.adapter.set_params(bad)
    with pytest.raises(SwarmError, match="val_data"):
        SwarmCallback(4, 1, val_data=(1, 2, 3, 4), network=network)
    with pytest.raises(SwarmError, match="model must be a keras Model, got dict"):
        SwarmCallback(4, 1, model={}, network=network)


def test_evaluate_reports_loss_and_first_metric_and_keeps_fit_metrics(tmp_path: Path) -> None:
    model = _model()
    x, y = skewed_digits.held_out()
    network = NetworkConfig(ledger=("127.0.0.1:1",), identity=tmp_path)
    cb = SwarmCallback(4, 1, model=model, val_data=(x, y), val_batch_size=64, network=network)
    model.fit(x[:64], y[:64], epochs=1, verbose=0)
    loss, metric = cb.adapter.evaluate()
    assert loss is not None and loss > 0 and metric is not None and 0 <= metric <= 1
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    assert loss == pytest.approx(expected["loss"], rel=1e-5)
    assert metric == pytest.approx(expected["accuracy"])
    model.evaluate(x[:32], y[:32], verbose=0)  # metrics now hold some running values
    before = [np.array(v.numpy()) for v in model.metrics_variables]
    cb.adapter.evaluate()
    after = [np.array(v.numpy()) for v in model.metrics_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


class _StopLedgerAt(keras.callbacks.Callback):
    """Stops the ledger after `batch` training batches; counts the batches."""

    def __init__(self, ledger: LocalLedger, batch: int) -> None:
        super().__init__()
        self.ledger, self.at, self.batches = ledger, batch, 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.batches += 1
        if self.batches == self.at:
            self.ledger.stop()


@pytest.mark.slow
def test_fit_stops_cleanly_when_the_swarm_cannot_go_on(tmp_path: Path, caplog) -> None:
    ledger = LocalLedger.create(tmp_path / "ledger", replicas=1, peers=["site-1"])
    ledger.start()
    try:
        ledger.wait_ready()
        network = NetworkConfig(
            ledger=tuple(ledger.endpoints),
            identity=ledger.identity_dir("site-1"),
            admin_identity=ledger.identity_dir("admin"),
        )
        model = _model()
        x, y = skewed_digits.shard(0, 1)
        # The ledger then stays down: give up after 2 s of retrying, not the default minute.
        cb = SwarmCallback(3, 1, network=network, ledger_retry_s=2.0)
        stopper = _StopLedgerAt(ledger, batch=4)
        with (
            caplog.at_level(logging.ERROR, logger="openswarm"),
            pytest.raises(SwarmError, match="ledger"),
        ):
            model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[stopper, cb])
        assert cb.rounds == 2  # the initial sync and the sync after batch 3
        assert stopper.batches == 6  # stopped at the failed sync, not after 3 epochs
        assert "the swarm cannot go on" in caplog.text and "stopping training" in caplog.text
        assert cb.final_digest is None
    finally:
        ledger.close()
