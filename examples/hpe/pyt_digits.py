"""An HPE Swarm Learning style PyTorch program: handwritten digits with a small network.

Written only against HPE's API (`swarmlearning.pyt`), so it runs unmodified on openswarm:
`openswarm run examples/hpe/pyt_digits.py --peers 3 [--data-dir DIR ...]`.

Each site reads its own `DATA_DIR/digits.npz` (`x`: 8x8 pixel intensities 0-16 as rows of 64,
`y`: labels); without one it uses scikit-learn's digits. A fifth of the local data is held
out for validation. Settings come from the environment: DATA_DIR, SCRATCH_DIR, MODEL_DIR,
MAX_EPOCHS, MIN_PEERS, SYNC_FREQUENCY. The final swarm model's state_dict is saved to
`MODEL_DIR/digits_pyt.pt`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from swarmlearning.pyt import SwarmCallback

DATA_DIR = Path(os.getenv("DATA_DIR", "data"))
SCRATCH_DIR = Path(os.getenv("SCRATCH_DIR", "scratch"))
MODEL_DIR = Path(os.getenv("MODEL_DIR", "model"))
MAX_EPOCHS = int(os.getenv("MAX_EPOCHS", "5"))
MIN_PEERS = int(os.getenv("MIN_PEERS", "2"))
SYNC_FREQUENCY = int(os.getenv("SYNC_FREQUENCY", "5"))


def load_local_data() -> tuple[np.ndarray, np.ndarray]:
    path = DATA_DIR / "digits.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["x"], data["y"]
    return load_digits(return_X_y=True)


def loaders(x: np.ndarray, y: np.ndarray) -> tuple[DataLoader, DataLoader]:
    """Training and validation batches: a random fifth of the local data for validation."""
    features = torch.tensor(x / 16.0, dtype=torch.float32)
    labels = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    cut = len(labels) // 5
    val, train = order[:cut], order[cut:]
    train_loader = DataLoader(
        TensorDataset(features[train], labels[train]), batch_size=32, shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    val_loader = DataLoader(TensorDataset(features[val], labels[val]), batch_size=128)
    return train_loader, val_loader


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)  # a small model: one thread per site
    train_loader, val_loader = loaders(*load_local_data())
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    swarm_callback = SwarmCallback(
        syncFrequency=SYNC_FREQUENCY,
        minPeers=MIN_PEERS,
        useAdaptiveSync=False,
        adsValData=val_loader,
        adsValBatchSize=128,
        model=model,
        lossFunction="CrossEntropyLoss",
        metricFunction="MulticlassAccuracy",
        metricFunctionArgs={"num_classes": 10, "average": "micro"},
        totalEpochs=MAX_EPOCHS,
        nodeWeightage=1,
        mergeMethod="mean",
        mlPlatform="PYTORCH",
    )
    swarm_callback.logger.setLevel(logging.INFO)
    swarm_callback.on_train_begin()
    for epoch in range(MAX_EPOCHS):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
            swarm_callback.on_batch_end()
        swarm_callback.on_epoch_end(epoch)
    swarm_callback.on_train_end()
    loss, accuracy = swarm_callback.evaluate()
    print(f"swarm model on local validation data: loss {loss:.3f}, accuracy {accuracy:.3f}")
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), MODEL_DIR / "digits_pyt.pt")
    print(f"saved the final swarm model to {MODEL_DIR}")


if __name__ == "__main__":
    main()
