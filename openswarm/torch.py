"""`from openswarm.torch import SwarmCallback`: the PyTorch binding."""

from openswarm.client.torch import SwarmCallback

__all__ = ["SwarmCallback"]
