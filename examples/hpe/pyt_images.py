"""An HPE Swarm Learning style PyTorch program that trains on image files in a folder.

Written only against HPE's API (`swarmlearning.pyt`), so it runs unmodified on openswarm:

    python examples/hpe/make_image_folders.py images --sites 3
    openswarm run examples/hpe/pyt_images.py --peers 3 \
        --data-dir images/site-1 images/site-2 images/site-3

Each site reads its own `DATA_DIR/<class>/<image>.png` (a folder per class, class names
sorted; any image format Pillow opens, converted to 28x28 grey) with Pillow alone: no
torchvision. A fifth is held out for validation. Settings come from the environment:
DATA_DIR, SCRATCH_DIR, MODEL_DIR, MAX_EPOCHS, MIN_PEERS, SYNC_FREQUENCY. The final swarm
model's state_dict is saved to `MODEL_DIR/images_pyt.pt`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from swarmlearning.pyt import SwarmCallback

DATA_DIR = Path(os.getenv("DATA_DIR", "data"))
SCRATCH_DIR = Path(os.getenv("SCRATCH_DIR", "scratch"))
MODEL_DIR = Path(os.getenv("MODEL_DIR", "model"))
MAX_EPOCHS = int(os.getenv("MAX_EPOCHS", "3"))
MIN_PEERS = int(os.getenv("MIN_PEERS", "2"))
SYNC_FREQUENCY = int(os.getenv("SYNC_FREQUENCY", "10"))
SIDE = 28
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


class ImageFolder(Dataset):
    """`root/<class>/<file>` images as (1x28x28 tensor in [0, 1], class index) pairs."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SystemExit(f"DATA_DIR {root} is not a folder of class folders")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.files = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((root / name).iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.files:
            raise SystemExit(
                f"no images in {root}/<class>/: write some with examples/hpe/make_image_folders.py"
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[index]
        with Image.open(path) as image:
            grey = image.convert("L").resize((SIDE, SIDE))
            pixels = np.asarray(grey, dtype=np.float32) / 255.0
        return torch.from_numpy(pixels).unsqueeze(0), label


def build_model(classes: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 5 * 5, classes),
    )  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    images = ImageFolder(DATA_DIR)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).tolist()
    cut = len(order) // 5
    train_loader = DataLoader(
        Subset(images, order[cut:]), batch_size=32, shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    val_loader = DataLoader(Subset(images, order[:cut]), batch_size=128)
    model = build_model(len(images.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
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
        metricFunctionArgs={"num_classes": len(images.classes), "average": "micro"},
        totalEpochs=MAX_EPOCHS,
        mlPlatform="PYTORCH",
    )
    swarm_callback.logger.info("%d images of %d classes in %s", len(images), len(images.classes),
                               DATA_DIR)  # fmt: skip
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
    swarm_callback.logger.info(
        "swarm model on local validation data: loss %.3f, accuracy %.3f", loss, accuracy
    )
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), MODEL_DIR / "images_pyt.pt")
    swarm_callback.logger.info("saved the final swarm model to %s", MODEL_DIR)


if __name__ == "__main__":
    main()
