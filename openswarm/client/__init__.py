"""Platform bindings: a `SwarmSession` over a model adapter, with thin hooks per platform."""

from openswarm.client.base import LoopCallback, ModelMethods, SessionView
from openswarm.client.session import ModelAdapter, SwarmSession

__all__ = ["LoopCallback", "ModelAdapter", "ModelMethods", "SessionView", "SwarmSession"]
