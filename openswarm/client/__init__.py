"""Platform bindings: a platform-neutral SwarmCallback base and one subclass per platform."""

from openswarm.client.base import SwarmCallbackBase

__all__ = ["SwarmCallbackBase"]
