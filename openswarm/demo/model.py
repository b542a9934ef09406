"""The demo's model and the training steps shared by the swarm peers and the baselines."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from openswarm.demo.data import FEATURES, NUM_CLASSES, Split

HIDDEN = 128
BATCH_SIZE = 32
LEARNING_RATE = 0.05
MOMENTUM = 0.9
MODEL_SEED = 7


def make_model(seed: int = MODEL_SEED) -> torch.nn.Module:
    """A 784→128→10 MLP with deterministic initial weights."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, NUM_CLASSES),
    )


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)


def shuffle_seed(rank: int, epoch: int, run_seed: int = 0) -> int:
    """The seed of site `rank`'s shuffling in `epoch` (the demo's --seed moves them all)."""
    return run_seed * 100_000 + rank * 1000 + epoch


def loader(data: Split, *, shuffle: bool, seed: int = 0, batch_size: int = BATCH_SIZE):
    """A DataLoader over `data`; shuffling follows `seed`."""
    dataset = TensorDataset(torch.from_numpy(data.x), torch.from_numpy(data.y))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def accuracy_of(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Share of rows whose arg-max output is the target."""
    return float((outputs.argmax(dim=1) == targets).float().mean())


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: DataLoader,
    after_batch: Callable[[], None] | None = None,
) -> float:
    """One pass over `batches`; returns the mean training loss."""
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    total, count = 0.0, 0
    for x, y in batches:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(y)
        count += len(y)
        if after_batch is not None:
            after_batch()
    return total / max(count, 1)


def evaluate(model: torch.nn.Module, data: Split) -> float:
    """Accuracy of `model` on `data`."""
    model.eval()
    with torch.no_grad():
        outputs = model(torch.from_numpy(data.x))
    return accuracy_of(outputs, torch.from_numpy(data.y))


def per_class_accuracy(model: torch.nn.Module, data: Split) -> np.ndarray:
    """Accuracy on each digit (10 values)."""
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(data.x)).argmax(dim=1).numpy()
    return np.array([float(np.mean(predicted[data.y == c] == c)) for c in range(NUM_CLASSES)])
