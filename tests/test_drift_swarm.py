"""Three-site swarms of real processes training with FedProx or SCAFFOLD (tests/swarm_script.py,
PyTorch hooks): they end with one model, and only SCAFFOLD adds to what travels."""

from __future__ import annotations

import pytest
import torch

from openswarm.codec import encode

pytestmark = pytest.mark.slow


def _model_bytes() -> int:
    """What the script's model (64-32-10 MLP) encodes to."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    return len(encode(model.state_dict()))


@pytest.mark.parametrize(
    ("env", "extra_models"),
    [
        ({"PROXIMAL_MU": "0.05"}, 0),
        # all three at once: variates, and fedavgm's momentum state (of the model's tensors)
        ({"CONTROL_VARIATES": "1", "PROXIMAL_MU": "0.01", "MERGE_METHOD": "fedavgm"}, 2),
    ],
    ids=["fedprox", "scaffold+fedprox+fedavgm"],
)
def test_three_sites_correcting_drift_end_with_one_model(
    swarm_factory, env: dict[str, str], extra_models: int
) -> None:
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="3", **env)
    swarm.start_all()
    swarm.wait()
    results = [swarm.result(n) for n in swarm.names]
    assert len({r["final_digest"] for r in results}) == 1, results
    assert all(r["accuracy"] > 0.3 for r in results), results  # it trained (chance: 0.1)
    state = swarm.state()
    assert len(state["history"]) >= 4 and all(h["status"] == "merged" for h in state["history"])
    # SCAFFOLD's variates travel with each snapshot and merged model: one model's worth more
    # (and fedavgm's momentum one more in the merged model)
    size = _model_bytes()
    assert state["latest_merged"]["size"] == pytest.approx((1 + extra_models) * size, rel=0.05)
    if extra_models:
        assert state["latest_merged"]["digest"] != results[0]["final_digest"]
    else:
        assert state["latest_merged"]["digest"] == results[0]["final_digest"]
