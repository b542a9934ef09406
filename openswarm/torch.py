"""`from openswarm.torch import SwarmCallback`: the PyTorch binding (and DP-SGD's
`make_private`)."""

from openswarm.client.torch import SwarmCallback
from openswarm.client.torch_dp import make_private

__all__ = ["SwarmCallback", "make_private"]
