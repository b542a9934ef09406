"""A Hugging Face Trainer site for the HF swarm tests: digits as tokens of a tiny BERT.

Each 8x8 digit is pooled to 4x4; pixel p with intensity bin b (of 4) is token 1 + 4p + b,
after a [CLS] token 0. Shards are non-IID: a site holds all of its own classes
(label % peers == rank) and every tenth example of the others.

Environment: OPENSWARM_* (as set by the tests), EPOCHS, SYNC_FREQUENCY, MIN_PEERS,
HF_MODE (`full` or `peft`). `local_only_accuracy` trains a site alone, for comparison.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from sklearn.datasets import load_digits
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from openswarm.codec import digest
from openswarm.hf import SwarmCallback

BINS = 4


class Examples(torch.utils.data.Dataset):
    """Token sequences and labels as the dicts a Trainer expects."""

    def __init__(self, tokens: np.ndarray, labels: np.ndarray) -> None:
        self.tokens, self.labels = torch.tensor(tokens), torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[i], "labels": self.labels[i]}


def digit_tokens() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    pooled = x.reshape(-1, 4, 2, 4, 2).sum(axis=(2, 4)).reshape(len(x), 16)  # 0..64
    bins = np.minimum(pooled * BINS // 65, BINS - 1).astype(np.int64)
    tokens = 1 + np.arange(16) * BINS + bins
    return np.concatenate([np.zeros((len(x), 1), np.int64), tokens], axis=1), y


def tiny_bert(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=1 + 16 * BINS, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=17, num_labels=10,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def with_lora(model: torch.nn.Module) -> torch.nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8,
                        target_modules=["query", "value"])  # fmt: skip
    return get_peft_model(model, config)


def base_name(name: str) -> str:
    """The base model's name of a PEFT model's non-adapter state entry."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".").replace(".original_module.", ".")


def shard(rank: int, peers: int) -> tuple[Examples, Examples]:
    """This site's non-IID training shard, and the shared test set."""
    tokens, labels = digit_tokens()
    order = np.random.default_rng(0).permutation(len(labels))
    test, train = order[:300], order[300:]
    own = labels[train] % peers == rank
    mine = train[own | (np.arange(len(train)) % 10 == 0)]
    return Examples(tokens[mine], labels[mine]), Examples(tokens[test], labels[test])


def train(model: torch.nn.Module, data: Examples, epochs: int, seed: int,
          callbacks: list[TrainerCallback]) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, num_train_epochs=epochs, per_device_train_batch_size=32,
            learning_rate=3e-3, seed=seed, use_cpu=True, report_to="none", save_strategy="no",
            logging_strategy="no", disable_tqdm=True,
        )  # fmt: skip
        Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks).train()


def accuracy(model: torch.nn.Module, data: Examples) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=data.tokens).logits
    return float((logits.argmax(-1) == data.labels).float().mean())


def local_only_accuracy(rank: int, peers: int, epochs: int) -> float:
    """The same site, trained alone: the baseline a swarm should beat."""
    data, test = shard(rank, peers)
    model = tiny_bert(rank)
    train(model, data, epochs, rank, [])
    return accuracy(model, test)


def main() -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    env = os.environ
    rank, peers = int(env["OPENSWARM_RANK"]), int(env["OPENSWARM_PEERS"])
    mode = env.get("HF_MODE", "full")
    data, test = shard(rank, peers)
    if mode == "peft":  # a shared base model (as if pretrained), site-specific adapters
        base = tiny_bert(1234)
        base_state = {k: v.clone() for k, v in base.state_dict().items()}
        torch.manual_seed(rank)
        model = with_lora(base)
    else:
        model = tiny_bert(rank)  # different initial weights: the initial sync aligns them
    cb = SwarmCallback(
        model, sync_frequency=int(env.get("SYNC_FREQUENCY", "10")),
        min_peers=int(env.get("MIN_PEERS", "2")), hf_mode=mode, val_data=test,
    )  # fmt: skip
    train(model, data, int(env.get("EPOCHS", "6")), rank, [cb])
    result: dict = {
        "name": env.get("OPENSWARM_PEER_NAME"),
        "accuracy": accuracy(model, test),
        "model_digest": digest({k: v.detach() for k, v in model.state_dict().items()}),
        "final_digest": cb.final_digest,
        "rounds": cb.rounds,
        "exchanged": list(cb.get_params()),
        "val": list(cb.evaluate()),
    }
    if mode == "peft":
        rest = {base_name(k): v for k, v in model.state_dict().items()
                if "lora_" not in k and ".modules_to_save." not in k}  # fmt: skip
        result["base_compared"] = sorted(rest) == sorted(base_state)
        result["base_unchanged"] = all(torch.equal(v, base_state[k]) for k, v in rest.items())
    with open(env["OPENSWARM_RESULT"], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
