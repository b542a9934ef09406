"""The Keras 2 binding: the swarm callback for TensorFlow's `tf.keras` when it is Keras 2.

That is `tf-keras` with `TF_USE_LEGACY_KERAS=1` (TensorFlow ≥ 2.16), or the Keras bundled
with TensorFlow < 2.16 — what HPE's TensorFlow programs are written for. The callback
subclasses that Keras's own `Callback`, so `model.fit(..., callbacks=[cb])` takes it; the
swarm side is the Keras 3 binding's (`openswarm.client.keras_common`).
"""

from __future__ import annotations

from typing import Any

from tensorflow import keras

from openswarm.client.keras_common import KerasCallbackMixin
from openswarm.node.peer import SwarmError

__all__ = ["SwarmCallback"]


class SwarmCallback(KerasCallbackMixin, keras.callbacks.Callback):
    """Swarm learning for a Keras 2 `model.fit`; the same arguments as
    `openswarm.keras.SwarmCallback`."""

    def __init__(
        self,
        sync_frequency: int,
        min_peers: int,
        *,
        model: Any = None,
        val_data: Any = None,
        val_batch_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if model is not None:
            if not isinstance(model, keras.Model):
                raise SwarmError(f"model must be a tf.keras Model, got {type(model).__name__}")
            self.set_model(model)
        self._join(sync_frequency, min_peers, val_data, val_batch_size, options)
