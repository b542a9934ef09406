"""The one binding pattern, in-process: a SwarmSession over a three-method model adapter,
driven by LoopCallback's hooks, with real peers (threads) on a real ledger replica."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from openswarm.client import LoopCallback, ModelAdapter, SwarmSession
from openswarm.codec import digest
from openswarm.ledger.local import LocalLedger
from openswarm.node.settings import NetworkConfig, SwarmConfigError
from openswarm.protocol import SwarmError

CONTRACT = "session"


class ArrayModel:
    """A dict of arrays; a "training step" moves it toward the site's own target."""

    def __init__(self, seed: int, offset: float = 0.0) -> None:
        rng = np.random.default_rng(seed)
        self.arrays = {"w": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
        self.target = seed
        self.offset = offset  # a broken set_params: loads with an error
        self.loaded = 0

    def step(self) -> None:
        for value in self.arrays.values():
            value += 0.1 * (self.target - value)

    def get_params(self) -> dict[str, np.ndarray]:
        return dict(self.arrays)

    def set_params(self, params: Mapping[str, Any]) -> None:
        for name, value in self.arrays.items():
            value[...] = np.asarray(params[name]) + self.offset
        self.loaded += 1

    def evaluate(self) -> tuple[float, None]:
        return float(np.mean([np.mean(v**2) for v in self.arrays.values()])), None


def _train(cb: LoopCallback, model: ArrayModel, epochs: int = 2, batches: int = 4) -> None:
    cb.on_train_begin()
    for epoch in range(epochs):
        for _ in range(batches):
            model.step()
            cb.on_batch_end()
        cb.on_epoch_end(epoch)
    cb.on_train_end()


def _callback(ledger: LocalLedger, name: str, model: ArrayModel) -> LoopCallback:
    network = NetworkConfig(ledger=tuple(ledger.endpoints), identity=ledger.identity_dir(name),
                            admin_identity=ledger.identity_dir("admin"))  # fmt: skip
    return LoopCallback(model, sync_frequency=2, min_peers=2, training_contract=CONTRACT,
                        total_epochs=2, network=network)  # fmt: skip


def test_two_sessions_over_plain_adapters_end_with_one_model(ledger1: LocalLedger) -> None:
    models = [ArrayModel(1), ArrayModel(2)]
    callbacks = [_callback(ledger1, f"p{i + 1}", m) for i, m in enumerate(models)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(_train, callbacks, models))
    finals = {cb.final_digest for cb in callbacks}
    assert len(finals) == 1 and None not in finals
    assert all(digest(m.get_params()) == callbacks[0].final_digest for m in models)
    # the initial sync and a merge every 2 batches (rounds), then the final model: all loaded
    assert all(cb.rounds == 5 and m.loaded == 6 for cb, m in zip(callbacks, models, strict=True))
    assert isinstance(callbacks[0].adapter, ModelAdapter) and callbacks[0].adapter is models[0]


def test_an_adapter_that_does_not_load_exactly_fails_the_end(ledger1: LocalLedger) -> None:
    models = [ArrayModel(1), ArrayModel(2, offset=1e-6)]
    callbacks = [_callback(ledger1, f"p{i + 1}", m) for i, m in enumerate(models)]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_train, cb, m) for cb, m in zip(callbacks, models, strict=True)]
    futures[0].result()
    with pytest.raises(SwarmError, match="set_params does not load exactly"):
        futures[1].result()


def test_a_session_needs_a_model_adapter() -> None:
    class Incomplete:
        def get_params(self) -> dict[str, np.ndarray]:
            return {}

    with pytest.raises(SwarmError, match="get_params\\(\\), set_params\\(params\\) and evaluate"):
        SwarmSession(Incomplete(), sync_frequency=1, min_peers=1)  # type: ignore[arg-type]


def test_loopback_trains_alone_through_the_same_session(monkeypatch) -> None:
    monkeypatch.setenv("SWARM_LOOPBACK", "True")
    model = ArrayModel(3)
    cb = LoopCallback(model, sync_frequency=2, min_peers=3)
    _train(cb, model)
    assert cb.peer is None and cb.final_digest == digest(model.get_params())
    assert model.loaded == 0


def test_overriding_the_adapters_methods_on_a_callback_is_refused() -> None:
    with pytest.raises(TypeError, match="override them on the model adapter"):

        class Sneaky(LoopCallback):  # the session would never call this
            def get_params(self) -> dict[str, np.ndarray]:
                return {}


def test_hpe_ram_intensive_off_merges_layer_by_layer(monkeypatch) -> None:
    monkeypatch.setenv("SWARM_LOOPBACK", "True")  # no network needed to read the settings
    model = ArrayModel(3)
    assert LoopCallback(model, sync_frequency=2, min_peers=3).settings.merge_memory == "model"
    monkeypatch.setenv("SL_RAM_INTENSIVE", "False")
    assert LoopCallback(model, sync_frequency=2, min_peers=3).settings.merge_memory == "layer"
    chosen = LoopCallback(model, sync_frequency=2, min_peers=3, merge_memory="model")
    assert chosen.settings.merge_memory == "model"  # an explicit choice wins
    with pytest.raises(SwarmConfigError, match="merge_memory must be one of model, layer"):
        LoopCallback(model, sync_frequency=2, min_peers=3, merge_memory="disk")
