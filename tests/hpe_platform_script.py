"""A platform brought to the swarm through HPE's extension API alone, written as HPE's docs
describe: logistic regression in plain numpy on scikit-learn's breast-cancer data."""

import json
import os

import numpy as np
from sklearn.datasets import load_breast_cancer

from swarmlearning.client.swarm import SwarmCallbackBase


class NumpySwarmCallback(SwarmCallbackBase):
    def __init__(self, syncFrequency, minPeers, trainingContract="defaultbb.cqdb.sml.hpe",
                 **kwargs):  # fmt: skip
        SwarmCallbackBase.__init__(self, syncFrequency, minPeers, trainingContract, kwargs)
        self._verifyAndSetPlatformContext(kwargs)
        self._swarmInitialize()

    def _verifyAndSetPlatformContext(self, params):
        model = params.get("model")
        if not isinstance(model, dict):
            raise ValueError("model must be a dict of numpy arrays")
        self.model = model

    def _getValidationDataForAdaptiveSync(self, valData, valBatchSize):
        x, y = valData if valData is not None else (None, None)
        return None, None, x, y, None

    def _saveModelWeightsToDict(self):
        self.weightNames = list(self.model)
        return {name: value.copy() for name, value in self.model.items()}

    def _loadModelWeightsFromDict(self, weights):
        for name in self.model:
            self.model[name][...] = weights[name]

    def _calculateLocalLossAndMetrics(self):
        p = predict(self.model, self.valX)
        loss = -np.mean(self.valY * np.log(p + 1e-9) + (1 - self.valY) * np.log(1 - p + 1e-9))
        return loss, np.mean((p > 0.5) == self.valY)


def predict(model, x):
    return 1 / (1 + np.exp(-(x @ model["w"] + model["b"])))


def main():
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order].astype(np.float64)
    test_x, test_y, x, y = x[:120], y[:120], x[120:], y[120:]
    node = int(os.environ.get("NODE_ID", "1"))
    peers = int(os.environ.get("OPENSWARM_PEERS", "1"))
    x, y = x[node - 1 :: peers], y[node - 1 :: peers]
    model = {"w": np.zeros(x.shape[1]), "b": np.zeros(1)}
    epochs = int(os.environ.get("MAX_EPOCHS", "3"))
    cb = NumpySwarmCallback(4, int(os.environ.get("MIN_PEERS", "1")), model=model,
                            adsValData=(test_x, test_y), totalEpochs=epochs)  # fmt: skip
    cb._swarmOnTrainBegin()
    for epoch in range(epochs):
        for start in range(0, len(y), 16):
            bx, by = x[start : start + 16], y[start : start + 16]
            error = predict(model, bx) - by
            model["w"] -= 0.1 * bx.T @ error / len(by)
            model["b"] -= 0.1 * error.mean(keepdims=True)
            cb._swarmOnBatchEnd()
        cb._swarmOnEpochEnd(epoch)
    cb._swarmOnTrainEnd()
    _, accuracy = cb._calculateLocalLossAndMetrics()
    cb.logger.info("accuracy %.3f", accuracy)
    if os.environ.get("OPENSWARM_RESULT"):
        with open(os.environ["OPENSWARM_RESULT"], "w") as f:
            json.dump({"final_digest": cb.final_digest, "accuracy": float(accuracy),
                       "over": cb.isSwarmTrainingOver}, f)  # fmt: skip


if __name__ == "__main__":
    main()
