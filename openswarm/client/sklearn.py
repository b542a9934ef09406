"""The scikit-learn binding: linear models trained with `partial_fit` (e.g. `SGDClassifier`).

A model adapter (`SklearnModel`) and a `LoopCallback` over it: written only against the
public binding API, as a third party would add a platform.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, is_classifier
from sklearn.metrics import accuracy_score, hinge_loss, log_loss, mean_squared_error, r2_score

from openswarm.client.base import LoopCallback
from openswarm.protocol import SwarmError

LINEAR_ATTRIBUTES = ("coef_", "intercept_")


class SklearnModel:
    """The model adapter of a scikit-learn estimator: its fitted arrays `attributes`
    (`coef_`, `intercept_` for linear models); `evaluate()` on `val_data=(x, y)`."""

    def __init__(
        self,
        estimator: BaseEstimator,
        *,
        val_data: tuple[Any, Any] | None = None,
        attributes: Sequence[str] = LINEAR_ATTRIBUTES,
    ) -> None:
        if not hasattr(estimator, "partial_fit"):
            raise SwarmError(f"{type(estimator).__name__} has no partial_fit: it cannot train on")
        if getattr(estimator, "average", False):
            raise SwarmError(
                "average=True keeps private copies of the coefficients that a merge cannot reach"
            )
        if val_data is not None and (not isinstance(val_data, tuple) or len(val_data) != 2):
            raise SwarmError("val_data must be a tuple (x, y)")
        self.estimator = estimator
        self.attributes = tuple(attributes)
        self.val_data = val_data

    def get_params(self) -> dict[str, np.ndarray]:
        missing = [a for a in self.attributes if getattr(self.estimator, a, None) is None]
        if missing:
            raise SwarmError(
                f"{type(self.estimator).__name__} has no {', '.join(missing)} yet: call "
                "partial_fit once (with classes= for a classifier) before on_train_begin()"
            )
        return {a: np.asarray(getattr(self.estimator, a)) for a in self.attributes}

    def set_params(self, params: Mapping[str, Any]) -> None:
        if set(params) != set(self.attributes):
            raise SwarmError(
                f"parameters {sorted(params)} do not match the synced {list(self.attributes)}"
            )
        current = self.get_params()
        for name in self.attributes:
            value = np.asarray(params[name])
            if value.shape != current[name].shape:
                raise SwarmError(
                    f"{name} has shape {value.shape}, the estimator's {current[name].shape}"
                )
        for name in self.attributes:  # fresh, writable arrays: partial_fit updates in place
            value = np.array(params[name], dtype=current[name].dtype, order="C")
            setattr(self.estimator, name, value)

    def learning_rate(self) -> float | None:
        """The step size of a constant-rate SGD estimator (``learning_rate="constant"``:
        ``eta0``), for the drift corrections; None for the other schedules (pass local_lr)."""
        est: Any = self.estimator
        if getattr(est, "learning_rate", None) == "constant":
            eta0 = getattr(est, "eta0", None)
            if isinstance(eta0, int | float) and eta0 > 0:
                return float(eta0)
        return None

    def evaluate(self) -> tuple[float | None, float | None]:
        if self.val_data is None:
            return None, None
        x, y = self.val_data
        est: Any = self.estimator
        if not is_classifier(est):
            predicted = est.predict(x)
            return float(mean_squared_error(y, predicted)), float(r2_score(y, predicted))
        accuracy = float(accuracy_score(y, est.predict(x)))
        if hasattr(est, "predict_proba"):
            return float(log_loss(y, est.predict_proba(x), labels=est.classes_)), accuracy
        return float(hinge_loss(y, est.decision_function(x), labels=est.classes_)), accuracy


class SwarmCallback(LoopCallback):
    """Sync a scikit-learn estimator's fitted arrays (`coef_`, `intercept_`) with the swarm.

    The estimator must be initialised first — one `partial_fit` with `classes=` (all of them:
    every site must know the same classes) — so the arrays exist for the initial sync:

    ```python
    clf = SGDClassifier(loss="log_loss")
    clf.partial_fit(x[:32], y[:32], classes=np.arange(10))
    cb = SwarmCallback(clf, sync_frequency=10, min_peers=3, val_data=(x_val, y_val))
    cb.on_train_begin()
    for epoch in range(epochs):
        for xb, yb in batches:
            clf.partial_fit(xb, yb); cb.on_batch_end()
        cb.on_epoch_end(epoch)
    cb.on_train_end()   # clf now holds the final swarm model, the same on every site
    ```

    `evaluate()` on `val_data=(x, y)` gives log-loss and accuracy for probabilistic
    classifiers, hinge loss and accuracy for other classifiers, mean squared error and R² for
    regressors. `attributes` names other fitted arrays to sync, for other estimators.
    """

    def __init__(
        self,
        estimator: BaseEstimator,
        sync_frequency: int,
        min_peers: int,
        *,
        val_data: tuple[Any, Any] | None = None,
        attributes: Sequence[str] = LINEAR_ATTRIBUTES,
        **options: Any,
    ) -> None:
        adapter = SklearnModel(estimator, val_data=val_data, attributes=attributes)
        super().__init__(adapter, sync_frequency, min_peers, **options)
        self.estimator = estimator
