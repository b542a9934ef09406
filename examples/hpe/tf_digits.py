"""An HPE Swarm Learning style Keras program: handwritten digits with a small network.

Written only against HPE's API (`swarmlearning.tf`), so it runs unmodified on openswarm:
`openswarm run examples/hpe/tf_digits.py --peers 3 [--data-dir DIR ...]`. It uses `tf.keras`
where TensorFlow ≥ 2.16 is installed, plain Keras 3 otherwise (on torch or JAX).

Each site reads its own `DATA_DIR/digits.npz` (`x`: 8x8 pixel intensities 0-16 as rows of 64,
`y`: labels); without one it uses scikit-learn's digits. A fifth of the local data is held
out for validation. Settings come from the environment: DATA_DIR, SCRATCH_DIR, MODEL_DIR,
MAX_EPOCHS, MIN_PEERS, SYNC_FREQUENCY. The final swarm model is saved to
`MODEL_DIR/digits_tf.keras`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from swarmlearning.tf import SwarmCallback

try:  # tf.keras of TensorFlow >= 2.16 is Keras 3; without TensorFlow, plain Keras 3
    from tensorflow import keras
except ImportError:
    import keras

DATA_DIR = Path(os.getenv("DATA_DIR", "data"))
SCRATCH_DIR = Path(os.getenv("SCRATCH_DIR", "scratch"))
MODEL_DIR = Path(os.getenv("MODEL_DIR", "model"))
MAX_EPOCHS = int(os.getenv("MAX_EPOCHS", "5"))
MIN_PEERS = int(os.getenv("MIN_PEERS", "2"))
SYNC_FREQUENCY = int(os.getenv("SYNC_FREQUENCY", "5"))


def load_local_data() -> tuple[np.ndarray, np.ndarray]:
    path = DATA_DIR / "digits.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["x"], data["y"]
    return load_digits(return_X_y=True)


def build_model() -> keras.Model:
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    x, y = load_local_data()
    x = (x / 16.0).astype("float32")
    order = np.random.default_rng(0).permutation(len(y))
    cut = len(y) // 5
    val, train = order[:cut], order[cut:]
    model = build_model()
    swarm_callback = SwarmCallback(
        syncFrequency=SYNC_FREQUENCY,
        minPeers=MIN_PEERS,
        useAdaptiveSync=False,
        adsValData=(x[val], y[val]),
        adsValBatchSize=128,
        totalEpochs=MAX_EPOCHS,
        nodeWeightage=1,
        mergeMethod="mean",
        mlPlatform="TF",
    )
    swarm_callback.logger.setLevel(logging.INFO)
    model.fit(
        x[train], y[train], batch_size=32, epochs=MAX_EPOCHS, verbose=2,
        callbacks=[swarm_callback],
    )  # fmt: skip
    loss, accuracy = model.evaluate(x[val], y[val], verbose=0)
    print(f"swarm model on local validation data: loss {loss:.3f}, accuracy {accuracy:.3f}")
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    model.save(MODEL_DIR / "digits_tf.keras")
    print(f"saved the final swarm model to {MODEL_DIR}")


if __name__ == "__main__":
    main()
