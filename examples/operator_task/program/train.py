"""A task program for operators: each site trains on its own private digits.

The operator gives it `DATA_DIR` (the site's folder named by the task's `private_data`),
which holds `digits.npz` (`x`: rows of 64 pixel intensities 0-16, `y`: labels), and the rest
of what `openswarm run` sets (ledger, identity, `OPENSWARM_RESULT`). Settings come from the
task's environment: `EPOCHS`, `SYNC_FREQUENCY`, `MIN_PEERS` (the contract's).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier

from openswarm.sklearn import SwarmCallback

BATCH = 32


def main() -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    env = os.environ
    data = np.load(Path(env["DATA_DIR"]) / "digits.npz")
    x, y = data["x"] / 16.0, data["y"]
    x_all, y_all = load_digits(return_X_y=True)  # the balanced public set, for evaluation
    x_test, y_test = x_all[::5] / 16.0, y_all[::5]
    epochs = int(env.get("EPOCHS", "3"))
    model = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0)
    model.partial_fit(x[:BATCH], y[:BATCH], classes=np.arange(10))
    swarm = SwarmCallback(
        model,
        sync_frequency=int(env.get("SYNC_FREQUENCY", "4")),
        min_peers=int(env.get("MIN_PEERS", "2")),
        val_data=(x_test, y_test),
        total_epochs=epochs,
    )
    swarm.on_train_begin()
    rng = np.random.default_rng(0)
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH):
            batch = order[start : start + BATCH]
            model.partial_fit(x[batch], y[batch])
            swarm.on_batch_end()
        swarm.on_epoch_end(epoch)
    swarm.on_train_end()
    result = {
        "site": env.get("OPENSWARM_PEER_NAME"),
        "final_digest": swarm.final_digest,
        "rounds": swarm.rounds,
        "accuracy": float(model.score(x_test, y_test)),
    }
    print(json.dumps(result), flush=True)
    Path(env["OPENSWARM_RESULT"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
