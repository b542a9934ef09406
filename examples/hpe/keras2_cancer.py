"""An HPE Swarm Learning style TensorFlow 2 (Keras 2) program: breast cancer diagnosis.

Written as HPE's TensorFlow examples are — `tf.keras` of Keras 2, an AUC metric, the model
saved with `model.save(path)` without an extension (TensorFlow's SavedModel format) — and
only against HPE's API (`swarmlearning.tf`). Run it unchanged with TensorFlow's Keras 2:

    pip install tensorflow-cpu tf-keras          # matching versions
    TF_USE_LEGACY_KERAS=1 openswarm run examples/hpe/keras2_cancer.py --peers 3

Each site reads its own `DATA_DIR/cancer.npz` (`x`: the 30 features of scikit-learn's breast
cancer set, `y`: 1 benign, 0 malignant); without one it uses the whole scikit-learn set.
A fifth is held out for validation. Settings come from the environment: DATA_DIR,
SCRATCH_DIR, MODEL_DIR, MAX_EPOCHS, MIN_PEERS, SYNC_FREQUENCY. The final swarm model is
saved to `MODEL_DIR/cancer_keras2`.
"""

import os

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_breast_cancer

from swarmlearning.tf import SwarmCallback

dataDir = os.getenv("DATA_DIR", "data")
scratchDir = os.getenv("SCRATCH_DIR", "scratch")
modelDir = os.getenv("MODEL_DIR", "model")
maxEpochs = int(os.getenv("MAX_EPOCHS", "10"))
minPeers = int(os.getenv("MIN_PEERS", "2"))
syncFrequency = int(os.getenv("SYNC_FREQUENCY", "4"))

# Population statistics of the features, fixed in the program so that every site scales its
# data the same way without sharing it.
FEATURE_SCALE = load_breast_cancer().data.std(axis=0)


def loadData():
    path = os.path.join(dataDir, "cancer.npz")
    if os.path.isfile(path):
        with np.load(path) as data:
            return data["x"], data["y"]
    return load_breast_cancer(return_X_y=True)


def buildModel():
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Dense(16, activation="relu", input_shape=(30,)),
            tf.keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=0.01),
        loss="binary_crossentropy",
        metrics=[tf.keras.metrics.AUC(name="auc")],
    )
    return model


def main():
    x, y = loadData()
    x = (x / FEATURE_SCALE).astype("float32")
    y = y.astype("float32")
    order = np.random.default_rng(0).permutation(len(y))
    cut = len(y) // 5
    xVal, yVal = x[order[:cut]], y[order[:cut]]
    xTrain, yTrain = x[order[cut:]], y[order[cut:]]
    tf.keras.utils.set_random_seed(1)
    model = buildModel()
    swarmCallback = SwarmCallback(
        syncFrequency=syncFrequency,
        minPeers=minPeers,
        useAdaptiveSync=False,
        adsValData=(xVal, yVal),
        adsValBatchSize=64,
        mlPlatform="TF",
    )
    swarmCallback.logger.info("Keras %s, %d training rows", tf.keras.__name__, len(yTrain))
    model.fit(xTrain, yTrain, batch_size=16, epochs=maxEpochs, verbose=2, callbacks=[swarmCallback])
    loss, auc = model.evaluate(xVal, yVal, verbose=0)
    swarmCallback.logger.info(
        "swarm model on local validation data: loss %.3f, AUC %.3f", loss, auc
    )
    model.save(os.path.join(modelDir, "cancer_keras2"))
    swarmCallback.logger.info("saved the final swarm model to %s", modelDir)


if __name__ == "__main__":
    main()
