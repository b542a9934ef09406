"""The Keras 3 binding: a `keras.callbacks.Callback` that trains with the swarm.

Only the Keras 3 API is used (`get_weights()` / `set_weights()`, `evaluate()`), so the
callback works on the TensorFlow, JAX and PyTorch backends alike. When neither
`KERAS_BACKEND` nor `~/.keras/keras.json` chooses a backend other than TensorFlow, and
TensorFlow is not installed, importing this module selects an installed one (torch, then
jax) before Keras is imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path


def choose_backend() -> str | None:
    """Set `KERAS_BACKEND` to an installed backend where Keras would pick a missing
    TensorFlow; returns the backend set, or None when nothing was changed."""
    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND"):
        return None
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        configured = json.loads((home / "keras.json").read_text(encoding="utf-8"))["backend"]
    except (OSError, ValueError, KeyError, TypeError):
        configured = "tensorflow"
    if configured != "tensorflow" or importlib.util.find_spec("tensorflow") is not None:
        return None
    for name in ("torch", "jax"):
        if importlib.util.find_spec(name) is not None:
            os.environ["KERAS_BACKEND"] = name
            return name
    return None


choose_backend()

import keras  # noqa: E402 - after choosing the backend

from openswarm.client.keras_common import (  # noqa: E402
    KerasCallbackMixin,
    KerasModel,
    named_weights,
    weight_names,
)

__all__ = ["KerasModel", "SwarmCallback", "named_weights", "weight_names"]


class SwarmCallback(KerasCallbackMixin, keras.callbacks.Callback):
    """Swarm learning for `model.fit`: `model.fit(x, y, callbacks=[cb])` is all.

    ```python
    cb = SwarmCallback(sync_frequency=20, min_peers=3, val_data=(x_val, y_val))
    model.fit(x, y, epochs=5, callbacks=[cb])   # model then holds the final swarm model
    ```

    `on_train_begin` joins the swarm and loads its model (initial sync), every
    `sync_frequency` training batches merge with the swarm, `on_train_end` does the final
    sync. `val_data` — `(x, y)`, `(x, y, sample_weight)` or a dataset — is evaluated with
    `model.evaluate` (loss and the first compiled metric) to report progress and to drive
    adaptive sync. Other keywords are `SwarmSession`'s (merge_method, node_weight, …).

    If the swarm cannot go on during training (a `SwarmError` in a sync), the callback logs
    the reason, sets `model.stop_training` so `fit` ends after the current batch, and raises
    that error from `on_train_end`: `fit` fails with it rather than return a model that
    silently left the swarm.
    """

    model_class = keras.Model
