"""HPE's extension point: `SwarmCallbackBase`, for bringing another ML platform to the swarm.

A platform subclass calls, in its `__init__`,
`SwarmCallbackBase.__init__(self, syncFrequency, minPeers, trainingContract, kwargs)`, then its
own `_verifyAndSetPlatformContext(kwargs)`, then `self._swarmInitialize()`; it implements
`_getValidationDataForAdaptiveSync`, `_verifyAndSetPlatformContext`,
`_saveModelWeightsToDict`, `_loadModelWeightsFromDict` and `_calculateLocalLossAndMetrics`,
and calls `_swarmOnTrainBegin()`, `_swarmOnBatchEnd()`, `_swarmOnEpochEnd()` and
`_swarmOnTrainEnd()` from the platform's own hooks. Here the three weight and loss methods
make the model adapter of an openswarm `SwarmSession`, and the `_swarmOn…` calls its steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openswarm.client.base import SessionView
from openswarm.client.session import SwarmSession
from openswarm.protocol import SwarmError
from swarmlearning._compat import COMMON_KEYWORDS, hpe_options

#: SwarmSession options a platform-neutral HPE callback can set.
_BASE_OPTIONS = (
    "sync_frequency", "min_peers", "merge_method", "node_weight", "training_contract",
    "total_epochs", "contribution", "use_adaptive_sync", "logger",
)  # fmt: skip


class _PlatformMethods:
    """The model adapter made of an HPE platform subclass's own methods."""

    def __init__(self, callback: SwarmCallbackBase) -> None:
        self.callback = callback

    def get_params(self) -> Mapping[str, Any]:
        return self.callback._saveModelWeightsToDict()

    def set_params(self, params: Mapping[str, Any]) -> None:
        self.callback._loadModelWeightsFromDict(params)

    def evaluate(self) -> tuple[float | None, float | None]:
        loss, metric = self.callback._calculateLocalLossAndMetrics()
        return (None if loss is None else float(loss), None if metric is None else float(metric))


class SwarmCallbackBase(SessionView):
    """HPE's base class of a platform's SwarmCallback (see the module docstring)."""

    def __init__(
        self,
        syncFrequency: Any,
        minPeers: Any,
        trainingContract: Any,
        kwargs: Mapping[str, Any],
    ) -> None:
        common = {k: v for k, v in kwargs.items() if k in COMMON_KEYWORDS and k != "model"}
        options = hpe_options(syncFrequency, minPeers, trainingContract, common, "base")
        settings = {k: v for k, v in options.items() if k in _BASE_OPTIONS}
        self.session = SwarmSession(_PlatformMethods(self), **settings)
        (self.valGen, self.validationSteps, self.valX, self.valY, self.valSampleWeight) = (
            self._getValidationDataForAdaptiveSync(
                options.get("val_data"), options.get("val_batch_size")
            )
        )
        self.weightNames: list[str] = []
        self._initialized = False

    # --- what HPE's platform subclass implements -------------------------------------------
    def _getValidationDataForAdaptiveSync(self, valData: Any, valBatchSize: Any) -> tuple:
        return (None, None, valData, None, None)

    def _verifyAndSetPlatformContext(self, params: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _saveModelWeightsToDict(self) -> dict[str, Any]:
        raise NotImplementedError

    def _loadModelWeightsFromDict(self, weights: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _calculateLocalLossAndMetrics(self) -> tuple[Any, Any]:
        return None, None

    # --- what the subclass calls ------------------------------------------------------------
    def _swarmInitialize(self) -> None:
        """Ready the session (the swarm is joined at the start of training)."""
        self._initialized = True

    def _swarmOnTrainBegin(self) -> None:
        if not self._initialized:
            raise SwarmError("call _swarmInitialize() in __init__, as HPE's API says")
        self.session.train_begin()

    def _swarmOnBatchEnd(self) -> None:
        self.session.batch_end()

    def _swarmOnEpochEnd(self, epoch: int | None = None) -> None:
        self.session.epoch_end(epoch)

    def _swarmOnTrainEnd(self) -> None:
        self.session.train_end()

    @property
    def isSwarmTrainingOver(self) -> bool:
        return self.final_digest is not None
