"""A Keras swarm site for the tests: skewed digits shard by rank.

Keras 3 on the backend KERAS_BACKEND names (torch by default) with
`openswarm.keras.SwarmCallback`, or Keras 2 (`tf.keras` with TF_USE_LEGACY_KERAS=1) with
`openswarm.client.tf_keras.SwarmCallback`. Trains with the callback in `model.fit`, then the
same model alone on the same shard for comparison; writes both test accuracies, the final
digest and the Keras in use to OPENSWARM_RESULT. Settings: MAX_EPOCHS, MIN_PEERS,
SYNC_FREQUENCY, PROXIMAL_MU and CONTROL_VARIATES=1 (drift corrections, a step after each
batch at the compiled SGD's learning rate).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import skewed_digits

from openswarm.client.keras_common import named_weights
from openswarm.codec import digest

if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
    from tensorflow import keras

    from openswarm.client.tf_keras import SwarmCallback

    FLAVOUR = "tf-keras"
else:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    from openswarm.keras import SwarmCallback

    FLAVOUR = keras.backend.backend()


def build(seed: int):  # a keras.Model of either generation
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def main() -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    if FLAVOUR == "torch":
        import torch

        torch.set_num_threads(1)
    env = os.environ
    rank, peers = int(env["OPENSWARM_RANK"]), int(env["OPENSWARM_PEERS"])
    epochs = int(env.get("MAX_EPOCHS", "4"))
    x, y = skewed_digits.shard(rank, peers)
    x_test, y_test = skewed_digits.held_out()
    model = build(rank)  # different initial weights: the initial sync aligns them
    cb = SwarmCallback(
        sync_frequency=int(env.get("SYNC_FREQUENCY", "4")),
        min_peers=int(env.get("MIN_PEERS", "2")),
        val_data=(x_test, y_test),
        proximal_mu=float(env.get("PROXIMAL_MU", "0")),
        control_variates=env.get("CONTROL_VARIATES") == "1",
    )
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[cb])
    alone = build(rank)
    alone.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    result = {
        "final_digest": cb.final_digest,
        "model_digest": digest(named_weights(model)),  # what fit left in the model
        "flavour": FLAVOUR,
        "rounds": cb.rounds,
        "swarm_accuracy": accuracy(model, x_test, y_test),
        "local_accuracy": accuracy(alone, x_test, y_test),
        "total_epochs": cb.total_epochs,
    }
    print(json.dumps(result), flush=True)
    with open(env["OPENSWARM_RESULT"], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
