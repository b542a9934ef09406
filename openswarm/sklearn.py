"""`from openswarm.sklearn import SwarmCallback`: scikit-learn estimators trained by partial_fit."""

from openswarm.client.sklearn import SwarmCallback

__all__ = ["SwarmCallback"]
