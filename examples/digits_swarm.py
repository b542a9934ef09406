"""A small swarm training script: scikit-learn's digits, one shard per site by rank.

Run three sites with `openswarm run examples/digits_swarm.py --peers 3`.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits

from openswarm.torch import SwarmCallback


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "WARNING"), format="%(asctime)s %(name)s %(message)s"
    )
    torch.set_num_threads(1)
    rank = int(os.environ.get("OPENSWARM_RANK", "0"))
    peers = int(os.environ.get("OPENSWARM_PEERS", "1"))
    epochs = int(os.environ.get("MAX_EPOCHS", "3"))
    sync = int(os.environ.get("SYNC_FREQUENCY", "5"))
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    order = np.random.default_rng(0).permutation(len(x))
    test, train = order[:300], order[300:]
    mine = train[rank::peers]
    torch.manual_seed(rank)  # different initial weights: the initial sync must align them
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    val = [(x[test], y[test])]
    cb = SwarmCallback(
        model,
        sync_frequency=sync,
        min_peers=int(os.environ.get("MIN_PEERS", "2")),
        val_data=val,
        loss_fn=loss_fn,
        total_epochs=epochs,
        metric_fn=lambda out, t: float((out.argmax(1) == t).float().mean()),
    )
    cb.on_train_begin()
    for epoch in range(epochs):
        for start in range(0, len(mine), 32):
            batch = mine[start : start + 32]
            opt.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            opt.step()
            cb.on_batch_end()
        cb.on_epoch_end(epoch)
    cb.on_train_end()
    with torch.no_grad():
        accuracy = float((model(x[test]).argmax(1) == y[test]).float().mean())
    result = {
        "name": os.environ.get("OPENSWARM_PEER_NAME"),
        "final_digest": cb.final_digest,
        "rounds": cb.rounds,
        "swarm_accuracy": accuracy,
    }
    print(json.dumps(result), flush=True)
    if os.environ.get("OPENSWARM_RESULT"):
        with open(os.environ["OPENSWARM_RESULT"], "w") as handle:
            json.dump(result, handle)
    sys.exit(0)


if __name__ == "__main__":
    main()
