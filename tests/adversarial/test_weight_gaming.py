"""Weights are agreed, not self-declared: a site that games its weight steers no robust merge.
Real site processes on a real ledger (tests/swarm_script.py, faults from faults.py)."""

from __future__ import annotations

import json

import pytest
from harness import identical_final

pytestmark = pytest.mark.slow


def test_a_site_declaring_the_most_weight_with_far_models_does_not_steer_coordmedian(
    swarm_factory,
) -> None:
    # site-5 declares 1e9 (refused: declared weights are HPE's 1-100), then offers a model
    # 1000 away at weight 100 each round, against four honest sites of weight 1. Weighted
    # by what it declared, it would hold 100/104 of the weight and be the median of every
    # coordinate; capped at the weights' lower median it weighs as much as one honest site.
    swarm = swarm_factory(5, EPOCHS="2", MIN_PEERS="5", MERGE_METHOD="coordmedian")
    report = swarm.root / "heavy.json"
    for name in swarm.names[:4]:
        swarm.start(name)
    # It never leads: a leader of the first round hands its own model out as everyone's
    # starting point (by design, as in HPE), which is a matter of leadership, not weights.
    swarm.start("site-5", FAULT="heavy_far", FAULT_REPORT=str(report), LEAD="0")
    swarm.wait()
    heavy = json.loads(report.read_text())["heavy"]
    assert heavy["status"] == "rejected" and "integer from 1 to 100" in heavy["reason"], heavy
    history = swarm.state()["history"]
    merges = [h for h in history if h["status"] == "merged" and h["round"] > 1]
    assert merges, history
    for record in merges:  # the far model was taken in, at weight 100, every round
        assert record["inputs"]["site-5"]["weight"] == 100.0, record
        assert "site-5" not in {e["name"] for e in record["excluded"]}, record
    honest = swarm.names[:4]
    identical_final(swarm, honest)
    for name in honest:  # trained from a small start; steered, its parameters would be ~1000
        assert swarm.result(name)["largest_param"] < 20, swarm.result(name)
