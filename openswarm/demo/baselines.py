"""Reference points for the swarm: each site alone, and everyone's data pooled in one place.

Same model, initial weights, optimizer, batch size and epochs as the swarm peers; trained
in-process, no network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from openswarm.demo.data import Split
from openswarm.demo.model import (
    MODEL_SEED,
    evaluate,
    loader,
    make_model,
    make_optimizer,
    shuffle_seed,
    train_epoch,
)


def train_alone(train: Split, test: Split, epochs: int, seed: int = 0, run_seed: int = 0) -> float:
    """Test accuracy of the model trained for `epochs` on `train` only (`run_seed`: the
    demo's --seed, which moves the initial weights and the shuffling)."""
    with _one_thread():
        model = make_model(MODEL_SEED + run_seed)
        optimizer = make_optimizer(model)
        for epoch in range(epochs):
            order = shuffle_seed(seed, epoch, run_seed)
            train_epoch(model, optimizer, loader(train, shuffle=True, seed=order))
        return evaluate(model, test)


def local_accuracies(
    shards: Sequence[Split], test: Split, epochs: int, run_seed: int = 0
) -> list[float]:
    """Test accuracy of a local-only model per site."""
    return [train_alone(s, test, epochs, rank, run_seed) for rank, s in enumerate(shards)]


def pooled(shards: Sequence[Split]) -> Split:
    """All shards in one data set."""
    return Split(x=np.concatenate([s.x for s in shards]), y=np.concatenate([s.y for s in shards]))


def centralized_accuracy(
    shards: Sequence[Split], test: Split, epochs: int, run_seed: int = 0
) -> float:
    """Test accuracy of the model trained on the pooled shards."""
    return train_alone(pooled(shards), test, epochs, len(shards), run_seed)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """A model this small trains fastest on one thread; more only contend for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
