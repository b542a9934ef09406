"""An HPE Swarm Learning style Hugging Face program: handwritten digits read by a tiny BERT.

Written only against HPE's API (`swarmlearning.hf_transformers`), so it runs unmodified on
openswarm: `openswarm run examples/hpe/hf_digits.py --peers 3 [--data-dir DIR ...]`.

Each site reads its own `DATA_DIR/digits.npz` (`x`: 8x8 pixel intensities 0-16 as rows of 64,
`y`: labels); without one it uses scikit-learn's digits. An image becomes 17 tokens: [CLS]
and, for each 2x2-pooled pixel p, token 1 + 4p + its intensity quartile. Settings come from
the environment: DATA_DIR, SCRATCH_DIR, MODEL_DIR, MAX_EPOCHS, MIN_PEERS, SYNC_FREQUENCY.
The final swarm model is saved to MODEL_DIR (`save_pretrained`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from swarmlearning.hf_transformers import SwarmCallback

BINS = 4
DATA_DIR = Path(os.getenv("DATA_DIR", "data"))
SCRATCH_DIR = Path(os.getenv("SCRATCH_DIR", "scratch"))
MODEL_DIR = Path(os.getenv("MODEL_DIR", "model"))
MAX_EPOCHS = int(os.getenv("MAX_EPOCHS", "5"))
MIN_PEERS = int(os.getenv("MIN_PEERS", "2"))
SYNC_FREQUENCY = int(os.getenv("SYNC_FREQUENCY", "10"))


class Digits(torch.utils.data.Dataset):
    """Digit images as BERT inputs with labels."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.ids = torch.tensor(to_tokens(x))
        self.labels = torch.tensor(y, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def to_tokens(x: np.ndarray) -> np.ndarray:
    pooled = x.reshape(-1, 4, 2, 4, 2).sum(axis=(2, 4)).reshape(len(x), 16)  # 0..64
    quartile = np.minimum(pooled * BINS // 65, BINS - 1).astype(np.int64)
    tokens = 1 + np.arange(16) * BINS + quartile
    return np.concatenate([np.zeros((len(x), 1), np.int64), tokens], axis=1)


def load_local_data() -> tuple[np.ndarray, np.ndarray]:
    path = DATA_DIR / "digits.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["x"], data["y"]
    return load_digits(return_X_y=True)


def build_model() -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=1 + 16 * BINS, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=17, num_labels=10,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def main() -> None:
    torch.set_num_threads(1)  # a tiny model: one thread per site
    x, y = load_local_data()
    order = np.random.default_rng(0).permutation(len(y))
    cut = len(y) // 5
    train, val = Digits(x[order[cut:]], y[order[cut:]]), Digits(x[order[:cut]], y[order[:cut]])
    model = build_model()
    swarm_callback = SwarmCallback(
        syncFrequency=SYNC_FREQUENCY,
        minPeers=MIN_PEERS,
        model=model,
        adsValData=val,
        adsValBatchSize=64,
        totalEpochs=MAX_EPOCHS,
        mergeMethod="mean",
        nodeWeightage=1,
        checkinModelOnTrainEnd="snapshot",
        hfMode="full",
    )
    args = TrainingArguments(
        output_dir=str(SCRATCH_DIR), num_train_epochs=MAX_EPOCHS, per_device_train_batch_size=32,
        learning_rate=3e-3, use_cpu=True, report_to="none", save_strategy="no",
        logging_strategy="epoch", disable_tqdm=True,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=train, callbacks=[swarm_callback]).train()
    loss, accuracy = swarm_callback.evaluate()
    print(f"swarm model on local validation data: loss {loss:.3f}, accuracy {accuracy:.3f}")
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(MODEL_DIR)
    print(f"saved the final swarm model to {MODEL_DIR}")


if __name__ == "__main__":
    main()
