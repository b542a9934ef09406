"""The operator (`openswarm operator start`): runs the tasks the ledger assigns to a host."""

from openswarm.operator.agent import Operator, OperatorError
from openswarm.operator.config import OperatorConfig, OperatorConfigError

__all__ = ["Operator", "OperatorConfig", "OperatorConfigError", "OperatorError"]
