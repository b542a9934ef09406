"""The Keras 2 binding: the swarm callback for TensorFlow's `tf.keras` when it is Keras 2.

That is `tf-keras` with `TF_USE_LEGACY_KERAS=1` (TensorFlow ≥ 2.16), or the Keras bundled
with TensorFlow < 2.16 — what HPE's TensorFlow programs are written for. The callback
subclasses that Keras's own `Callback`, so `model.fit(..., callbacks=[cb])` takes it; the
swarm side is the Keras 3 binding's (`openswarm.client.keras_common`).
"""

from __future__ import annotations

from tensorflow import keras

from openswarm.client.keras_common import KerasCallbackMixin

__all__ = ["SwarmCallback"]


class SwarmCallback(KerasCallbackMixin, keras.callbacks.Callback):
    """Swarm learning for a Keras 2 `model.fit`; the same arguments as
    `openswarm.keras.SwarmCallback`."""

    model_class = keras.Model
