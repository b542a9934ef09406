"""One demo peer: train the MLP on this site's shard with the swarm, then test it.

Run under the launcher (`openswarm run -m openswarm.demo.train --peers 3 --data-dir ...`),
which sets OPENSWARM_DATA_DIR (holding `shard.npz`), the swarm's network settings and
OPENSWARM_RESULT, where this writes `{"name", "swarm_accuracy", "final_digest", "rounds"}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_EPOCHS = 10
DEFAULT_SYNC_FREQUENCY = 10
DP_CLIP = 1.0  # per-sample gradient norm (DP-SGD), or the update's norm (site-level)
DP_DELTA = 1e-5


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("OPENSWARM_DATA_DIR"))
    parser.add_argument("--test", type=Path, help="test set (default: DATA_DIR/../test.npz)")
    parser.add_argument(
        "--epochs", type=int, default=int(os.environ.get("MAX_EPOCHS", DEFAULT_EPOCHS))
    )
    parser.add_argument("--sync-frequency", type=int, default=DEFAULT_SYNC_FREQUENCY)
    parser.add_argument(
        "--min-peers", type=int, default=int(os.environ.get("OPENSWARM_MIN_PEERS", "2"))
    )
    parser.add_argument("--result", type=Path, default=os.environ.get("OPENSWARM_RESULT"))
    parser.add_argument("--compression", default=None, help="how models travel (contract)")
    parser.add_argument("--topology", default=None, help="who merges: leader or sharded")
    parser.add_argument("--merge", default="mean", help="merge method (contract)")
    parser.add_argument(
        "--merge-options", type=json.loads, default={}, help="its options, a JSON object"
    )
    parser.add_argument("--proximal-mu", type=float, default=0.0, help="FedProx's mu")
    parser.add_argument(
        "--control-variates", action="store_true", help="SCAFFOLD's control variates"
    )
    parser.add_argument("--seed", type=int, default=0, help="moves initial weights, shuffles")
    parser.add_argument("--dp", type=float, default=None, help="differential privacy: ε budget")
    parser.add_argument(
        "--secure-aggregation",
        action="store_true",
        help="masked updates: the merger learns only their sum (contract)",
    )
    parser.add_argument(
        "--dp-mode", choices=("sgd", "site"), default="sgd",
        help="sgd: DP-SGD (per record); site: noised updates (per site)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error("no data: pass --data-dir or set OPENSWARM_DATA_DIR (openswarm run does)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    from openswarm.demo.data import Split
    from openswarm.demo.model import (
        MODEL_SEED,
        accuracy_of,
        evaluate,
        loader,
        make_model,
        make_optimizer,
        shuffle_seed,
        train_epoch,
    )
    from openswarm.torch import SwarmCallback

    torch.set_num_threads(1)  # several peers share the machine's cores
    name = os.environ.get("OPENSWARM_PEER_NAME", "site")
    rank = int(os.environ.get("OPENSWARM_RANK", "0"))
    shard = Split.load(args.data_dir / "shard.npz")
    test = Split.load(args.test or args.data_dir.parent / "test.npz")

    model = make_model(MODEL_SEED + args.seed)
    optimizer = make_optimizer(model)
    private = None
    if args.dp is not None:
        model, optimizer, private, dp = private_training(model, optimizer, shard, args)
    else:
        dp = {}
    callback = SwarmCallback(
        model,
        sync_frequency=args.sync_frequency,
        min_peers=args.min_peers,
        merge_method=args.merge,
        merge_options=args.merge_options,
        proximal_mu=args.proximal_mu,
        control_variates=args.control_variates,
        optimizer=optimizer,  # tells the drift corrections the local step size
        node_weight=min(100, max(1, round(len(shard) / 50))),  # 1-100: one per 50 samples
        # the test set is only watched (loss/metric on the ledger), never trained on
        val_data=loader(test, shuffle=False, batch_size=500),
        loss_fn=torch.nn.CrossEntropyLoss(),
        metric_fn=accuracy_of,
        total_epochs=args.epochs,
        compression=args.compression,
        merge_topology=args.topology,
        secure_aggregation=True if args.secure_aggregation else None,
        **dp,
    )
    callback.on_train_begin()
    for epoch in range(args.epochs):
        batches = private or loader(shard, shuffle=True, seed=shuffle_seed(rank, epoch, args.seed))
        loss = train_epoch(model, optimizer, batches, after_batch=callback.on_batch_end)
        callback.on_epoch_end(epoch)
        print(f"{name}: epoch {epoch + 1}/{args.epochs} training loss {loss:.4f}", flush=True)
    callback.on_train_end()

    accuracy = evaluate(model, test)
    result = {
        "name": name,
        "swarm_accuracy": accuracy,
        "final_digest": callback.final_digest,
        "rounds": callback.rounds,
        "traffic": None if callback.peer is None else callback.peer.traffic(),
    }
    if callback.session.privacy is not None:
        privacy = callback.session.privacy
        result["privacy"] = {**privacy.record(), "noise_multiplier": privacy.noise}
    print(json.dumps(result), flush=True)
    if args.result is not None:
        args.result.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def private_training(model: Any, optimizer: Any, shard: Any, args: argparse.Namespace) -> tuple:
    """The model, optimizer, DP loader (DP-SGD, else None) and the callback's DP options
    that spend at most `args.dp` over this run's planned steps or rounds (δ = DP_DELTA)."""
    from openswarm.demo.model import loader
    from openswarm.torch import make_private

    batches = loader(shard, shuffle=True)
    if args.dp_mode == "sgd":
        model, optimizer, private = make_private(
            model, optimizer, batches, max_grad_norm=DP_CLIP, target_epsilon=args.dp,
            steps=args.epochs * len(batches), delta=DP_DELTA,
        )  # fmt: skip
        return model, optimizer, private, {"dp": "sgd", "dp_epsilon": args.dp,
                                           "dp_delta": DP_DELTA}  # fmt: skip
    # one release per merge, and the final one
    rounds = args.epochs * len(batches) // args.sync_frequency + 1
    return model, optimizer, None, {"dp": "site", "dp_epsilon": args.dp, "dp_clip": DP_CLIP,
                                    "dp_delta": DP_DELTA, "dp_rounds": rounds}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
