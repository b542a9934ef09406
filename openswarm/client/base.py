"""The hook side every binding shares: a callback holds a `SwarmSession` over its adapter.

`SessionView` gives a callback the session's read-outs (`final_digest`, `rounds`,
`intervals`, …); `ModelMethods` forwards `get_params` / `set_params` / `evaluate` to the
adapter; `LoopCallback` is the whole callback of an ordinary training loop, for any
`ModelAdapter` — the documented way to bring another platform:

```python
class MyModel:                       # a ModelAdapter
    def get_params(self): ...        # {name: array}
    def set_params(self, params): ...
    def evaluate(self): ...          # (loss, metric), either may be None

cb = LoopCallback(MyModel(), sync_frequency=10, min_peers=3)
cb.on_train_begin(); ...; cb.on_batch_end(); ...; cb.on_epoch_end(epoch); ...; cb.on_train_end()
```

A platform with hooks of its own (Keras, the HF Trainer) mixes `SessionView` into its
callback class and calls the session's steps from those hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from openswarm.client.session import ModelAdapter, SwarmSession
from openswarm.node.peer import SwarmPeer
from openswarm.node.settings import SwarmSettings


class SessionView:
    """Read-outs of the callback's `session` (set in the callback's constructor)."""

    session: SwarmSession

    @property
    def adapter(self) -> ModelAdapter:
        """The model adapter the session reads, loads and evaluates."""
        return self.session.model

    @property
    def settings(self) -> SwarmSettings:
        return self.session.settings

    @property
    def peer(self) -> SwarmPeer | None:
        return self.session.peer

    @property
    def loopback(self) -> bool:
        return self.session.loopback

    @property
    def logger(self) -> logging.Logger:
        return self.session.logger

    @property
    def final_digest(self) -> str | None:
        """The final model's digest, the same on every site (after training ends)."""
        return self.session.final_digest

    @property
    def rounds(self) -> int:
        return self.session.rounds

    @property
    def intervals(self) -> list[tuple[int, int]]:
        return self.session.intervals

    @property
    def sync_frequency(self) -> int:
        return self.session.sync_frequency

    @property
    def round_timings(self) -> list[dict[str, float]]:
        return self.session.round_timings

    @property
    def total_epochs(self) -> int | None:
        return self.session.total_epochs


class ModelMethods(SessionView):
    """The adapter's three methods on the callback itself (not for Keras, whose
    `Callback.set_params` is its own). The session calls the adapter, so a subclass that
    overrides them here would be ignored: that is refused, subclass the adapter instead."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = [m for m in ("get_params", "set_params", "evaluate") if m in vars(cls)]
        if overridden:
            raise TypeError(
                f"{cls.__name__} overrides {', '.join(overridden)} on the callback, which the "
                "swarm session never calls: override them on the model adapter (e.g. a "
                "subclass of TorchModel) and pass that to LoopCallback"
            )

    def get_params(self) -> Mapping[str, Any]:
        return self.session.model.get_params()

    def set_params(self, params: Mapping[str, Any]) -> None:
        self.session.model.set_params(params)

    def evaluate(self) -> tuple[float | None, float | None]:
        return self.session.model.evaluate()


class LoopCallback(ModelMethods):
    """The swarm callback of an ordinary training loop, for any model adapter; `options`
    are `SwarmSession`'s (merge_method, node_weight, total_epochs, …)."""

    def __init__(
        self, model: ModelAdapter, sync_frequency: int, min_peers: int, **options: Any
    ) -> None:
        self.session = SwarmSession(
            model, sync_frequency=sync_frequency, min_peers=min_peers, **options
        )

    def on_train_begin(self) -> None:
        """Join the swarm and start from the swarm's model."""
        self.session.train_begin()

    def on_batch_end(self) -> None:
        """Count a batch; every `sync_frequency` batches, merge with the swarm."""
        self.session.batch_end()

    def on_epoch_end(self, epoch: int | None = None) -> None:
        self.session.epoch_end(epoch)

    def on_train_end(self) -> None:
        """Final sync; the model then holds the final model, identical on every site."""
        self.session.train_end()
