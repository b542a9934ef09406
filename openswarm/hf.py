"""`from openswarm.hf import SwarmCallback`: the Hugging Face Trainer binding."""

from openswarm.client.hf import SwarmCallback

__all__ = ["SwarmCallback"]
