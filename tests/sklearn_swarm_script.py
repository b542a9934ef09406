"""A scikit-learn swarm site for the tests: `SGDClassifier` on its skewed digits shard.

Trains with `openswarm.sklearn.SwarmCallback`, then the same model alone on the same shard
for comparison; writes both test accuracies and the final digest to OPENSWARM_RESULT.
Settings: MAX_EPOCHS, MIN_PEERS, SYNC_FREQUENCY, LOSS (an SGDClassifier loss).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import skewed_digits
from sklearn.linear_model import SGDClassifier

from openswarm.sklearn import SwarmCallback

CLASSES = np.arange(10)
BATCH = 32


def train(clf: SGDClassifier, x: np.ndarray, y: np.ndarray, epochs: int, cb=None) -> None:
    """`epochs` passes of mini-batch partial_fit (the first batch already initialised clf)."""
    rng = np.random.default_rng(0)
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH):
            batch = order[start : start + BATCH]
            clf.partial_fit(x[batch], y[batch])
            if cb is not None:
                cb.on_batch_end()
        if cb is not None:
            cb.on_epoch_end(epoch)


def fresh(x: np.ndarray, y: np.ndarray, seed: int) -> SGDClassifier:
    clf = SGDClassifier(loss=os.environ.get("LOSS", "log_loss"), alpha=1e-4, random_state=seed)
    clf.partial_fit(x[:BATCH], y[:BATCH], classes=CLASSES)
    return clf


def main() -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    env = os.environ
    rank, peers = int(env["OPENSWARM_RANK"]), int(env["OPENSWARM_PEERS"])
    epochs = int(env.get("MAX_EPOCHS", "5"))
    x, y = skewed_digits.shard(rank, peers)
    x_test, y_test = skewed_digits.held_out()
    clf = fresh(x, y, rank)
    cb = SwarmCallback(
        clf,
        sync_frequency=int(env.get("SYNC_FREQUENCY", "4")),
        min_peers=int(env.get("MIN_PEERS", "2")),
        val_data=(x_test, y_test),
        total_epochs=epochs,
    )
    cb.on_train_begin()
    train(clf, x, y, epochs, cb)
    cb.on_train_end()
    alone = fresh(x, y, rank)
    train(alone, x, y, epochs)
    result = {
        "final_digest": cb.final_digest,
        "rounds": cb.rounds,
        "swarm_accuracy": float(clf.score(x_test, y_test)),
        "local_accuracy": float(alone.score(x_test, y_test)),
        "evaluated": cb.evaluate(),
    }
    print(json.dumps(result), flush=True)
    with open(env["OPENSWARM_RESULT"], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
