"""A light swarm site for many peers on one machine: softmax regression in plain numpy.

No torch and no scikit-learn (both cost a second and 100 MB or more per process): the
binding is a three-method model adapter under `LoopCallback`, the data a fixed Gaussian mixture
that every site draws its own share of. Writes its final digest and rounds to
OPENSWARM_RESULT. Settings: MAX_EPOCHS (default 3), MIN_PEERS, SYNC_FREQUENCY (default 4).
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
from collections.abc import Mapping
from typing import Any

import numpy as np

from openswarm.client import LoopCallback

CLASSES, FEATURES = 4, 8
SAMPLES, BATCH = 64, 16  # per site: four batches an epoch
RATE = 0.5


def draw(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` labelled points of the mixture every site shares (its centres are fixed)."""
    centres = np.random.default_rng(0).normal(size=(CLASSES, FEATURES))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=n)
    return centres[y] + rng.normal(scale=1.5, size=(n, FEATURES)), y


def probabilities(model: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    logits = x @ model["w"] + model["b"]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


class NumpyModel:
    """The model adapter of a dict of numpy arrays, updated in place by the training loop."""

    def __init__(self, model: dict[str, np.ndarray], val: tuple[np.ndarray, np.ndarray]) -> None:
        self.model, self.val = model, val

    def get_params(self) -> dict[str, np.ndarray]:
        return dict(self.model)

    def set_params(self, params: Mapping[str, Any]) -> None:
        for name, value in self.model.items():
            value[...] = params[name]

    def evaluate(self) -> tuple[float, float]:
        x, y = self.val
        p = probabilities(self.model, x)
        loss = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))
        return float(loss), float(np.mean(p.argmax(axis=1) == y))


def main() -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    # Stopped by the launcher (a run that hangs), a site writes where its threads were.
    faulthandler.register(signal.SIGTERM, chain=True)
    env = os.environ
    rank = int(env["OPENSWARM_RANK"])
    epochs = int(env.get("MAX_EPOCHS", "3"))
    x, y = draw(rank + 1, SAMPLES)
    model = {"w": np.zeros((FEATURES, CLASSES)), "b": np.zeros(CLASSES)}
    cb = LoopCallback(
        NumpyModel(model, draw(10_000, 200)),
        sync_frequency=int(env.get("SYNC_FREQUENCY", "4")),
        min_peers=int(env["MIN_PEERS"]),
        total_epochs=epochs,
    )
    cb.on_train_begin()
    for epoch in range(epochs):
        for start in range(0, SAMPLES, BATCH):
            bx, by = x[start : start + BATCH], y[start : start + BATCH]
            error = probabilities(model, bx)
            error[np.arange(len(by)), by] -= 1.0
            model["w"] -= RATE * bx.T @ error / len(by)
            model["b"] -= RATE * error.mean(axis=0)
            cb.on_batch_end()
        cb.on_epoch_end(epoch)
    cb.on_train_end()
    loss, accuracy = cb.evaluate()
    result = {"final_digest": cb.final_digest, "rounds": cb.rounds, "loss": loss,
              "accuracy": accuracy}  # fmt: skip
    with open(env["OPENSWARM_RESULT"], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
