"""A real training script for the swarm tests: scikit-learn's digits, one shard per rank.

Behaviour comes from the environment, as a site's configuration would:
EPOCHS, SYNC_FREQUENCY, MIN_PEERS, CONTRIBUTION, LEADER_TIMEOUT, LR, ADAPTIVE (1: adaptive
sync), BATCH_DELAY_S (simulated
compute per batch), BALLAST (extra float32 buffer values: a larger model), and BAD_PARAMS
(`nan` or `shape`: from the second round on this site offers broken parameters),
PRESENCE_TIMEOUT (seconds a silent member counts as present), LEAD=0 (never lead),
MERGE_METHOD, MERGE_OPTIONS (JSON), PROXIMAL_MU and CONTROL_VARIATES=1 (drift
remedies), WEIGHT_POLICY and NODE_WEIGHT (the declared weight), AUDIT (auditors per
merge) and MAY_AUDIT=0 (never audit), COMPRESSION (how models travel),
SECURE_AGGREGATION (JSON: true, or {"threshold", "bound"}),
DP=site (differential privacy) with DP_CLIP, DP_NOISE, DP_EPSILON (the budget) and
DP_ROUNDS, HOLD_FILE and HOLD_EPOCH (wait before that epoch until the test creates the
file), and FAULT
(a hostile or failing behaviour from tests/adversarial/faults.py).
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from openswarm.client import LoopCallback, SwarmSession
from openswarm.client.torch import TorchModel
from openswarm.torch import SwarmCallback

MODEL_OPTIONS = ("val_data", "loss_fn", "metric_fn")


class BrokenModel(TorchModel):
    """A model whose snapshots are malformed after the initial sync."""

    def __init__(self, *args, mode: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mode = mode
        self.session: SwarmSession | None = None

    def get_params(self):
        params = super().get_params()
        session = self.session
        if session and session.rounds >= 1 and not (session.peer and session.peer.finished):
            name = next(iter(params))
            if self.mode == "nan":
                params[name] = params[name].clone()
                params[name].view(-1)[0] = float("nan")
            else:
                params[name] = params[name][:-1].clone()
        return params


def await_members(cb: SwarmCallback, count: int, timeout_s: float = 120.0) -> None:
    """Train only once `count` sites are members (env AWAIT_MEMBERS): on a loaded machine a
    site that starts slowly could otherwise register after the others finished the run."""
    deadline = time.monotonic() + timeout_s
    while count and cb.peer is not None and len(cb.peer.view()["members"]) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"fewer than {count} members after {timeout_s:.0f} s")
        time.sleep(0.05)


def main() -> None:
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    env = os.environ
    rank, peers = int(env["OPENSWARM_RANK"]), int(env["OPENSWARM_PEERS"])
    epochs = int(env.get("EPOCHS", "2"))
    delay = float(env.get("BATCH_DELAY_S", "0"))
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    order = np.random.default_rng(0).permutation(len(x))
    test, train = order[:300], order[300:]
    mine = train[rank::peers]
    torch.manual_seed(rank)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    if int(env.get("BALLAST", "0")):
        model.register_buffer("ballast", torch.zeros(int(env["BALLAST"])))
    opt = torch.optim.SGD(model.parameters(), lr=float(env.get("LR", "0.2")))
    loss_fn = torch.nn.CrossEntropyLoss()
    options = dict(
        sync_frequency=int(env.get("SYNC_FREQUENCY", "5")),
        min_peers=int(env.get("MIN_PEERS", "2")),
        val_data=[(x[test], y[test])],
        loss_fn=loss_fn,
        metric_fn=lambda out, t: float((out.argmax(1) == t).float().mean()),
        total_epochs=epochs,
        contribution=env.get("CONTRIBUTION", "snapshot"),
        leader_timeout_s=float(env.get("LEADER_TIMEOUT", "20")),
        use_adaptive_sync=env.get("ADAPTIVE") == "1",
        presence_timeout_s=float(env.get("PRESENCE_TIMEOUT", "30")),
        lead=False if env.get("LEAD") == "0" else None,  # None: SL_MAKE_ME_ADMIN decides
        merge_method=env.get("MERGE_METHOD", "mean"),
        merge_options=json.loads(env.get("MERGE_OPTIONS") or "{}"),
        proximal_mu=float(env.get("PROXIMAL_MU", "0")),
        control_variates=env.get("CONTROL_VARIATES") == "1",
        weight_policy=env.get("WEIGHT_POLICY") or None,
        node_weight=int(env.get("NODE_WEIGHT", "1")),
        audit=int(env["AUDIT"]) if env.get("AUDIT") else None,
        may_audit=env.get("MAY_AUDIT") != "0",
        compression=env.get("COMPRESSION") or None,
        secure_aggregation=json.loads(env.get("SECURE_AGGREGATION") or "null"),
    )
    if env.get("DP"):
        number = {k: float(env[k]) if env.get(k) else None for k in ("DP_NOISE", "DP_EPSILON")}
        options.update(dp=env["DP"], dp_clip=float(env.get("DP_CLIP", "1")),
                       dp_noise=number["DP_NOISE"], dp_epsilon=number["DP_EPSILON"],
                       dp_rounds=int(env.get("DP_ROUNDS") or 0) or None)  # fmt: skip
    if env.get("FAULT"):
        from adversarial.faults import install

        install(env["FAULT"])
    bad = env.get("BAD_PARAMS")
    if bad:
        broken = BrokenModel(model, mode=bad, **{k: options.pop(k) for k in MODEL_OPTIONS})
        cb = LoopCallback(broken, options.pop("sync_frequency"), options.pop("min_peers"),
                          **options)  # fmt: skip
        broken.session = cb.session
    else:
        cb = SwarmCallback(model, optimizer=opt, **options)
    cb.on_train_begin()
    print(f"joined at round {cb.rounds} digest-ready", flush=True)
    await_members(cb, int(env.get("AWAIT_MEMBERS", "0")))
    for epoch in range(epochs):
        if env.get("HOLD_FILE") and epoch == int(env.get("HOLD_EPOCH", "-1")):
            while not os.path.exists(env["HOLD_FILE"]):
                time.sleep(0.05)
        for start in range(0, len(mine), 32):
            batch = mine[start : start + 32]
            opt.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            opt.step()
            if delay:
                time.sleep(delay)
            cb.on_batch_end()
        cb.on_epoch_end(epoch)
    cb.on_train_end()
    with torch.no_grad():
        accuracy = float((model(x[test]).argmax(1) == y[test]).float().mean())
        largest = max(float(p.abs().max()) for p in model.parameters())
    result = {"name": env["OPENSWARM_PEER_NAME"], "final_digest": cb.final_digest,
              "rounds": cb.rounds, "accuracy": accuracy, "intervals": cb.intervals,
              "largest_param": largest}  # fmt: skip
    privacy = cb.session.privacy
    if privacy is not None:
        result["privacy"] = {"releases": privacy.releases, **privacy.record()}
    with open(env["OPENSWARM_RESULT"], "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
