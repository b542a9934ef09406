"""`from openswarm.keras import SwarmCallback`: the Keras 3 binding (TensorFlow, JAX, torch)."""

from openswarm.client.keras import SwarmCallback

__all__ = ["SwarmCallback"]
