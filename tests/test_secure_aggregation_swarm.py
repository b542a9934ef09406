"""Securely aggregated swarms of real processes (tests/swarm_script.py): a site killed after
its masked update was pulled, before it revealed its shares, is recovered from the others'
shares; the swarm trains on and ends with one model."""

from __future__ import annotations

import json

import pytest
from harness import identical_final

pytestmark = pytest.mark.slow


def test_a_site_killed_before_unmasking_is_recovered_from_the_shares(
    swarm_factory, tmp_path
) -> None:
    report, marker = tmp_path / "report.json", tmp_path / "marker"
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="2", AWAIT_MEMBERS="3", PRESENCE_TIMEOUT="6",
                          SECURE_AGGREGATION='{"threshold": 2, "bound": 1.0}')  # fmt: skip
    swarm.start_all(FAULT="die_before_unmask", FAULT_MARKER=str(marker),
                    FAULT_REPORT=str(report))  # fmt: skip
    swarm.wait_for(lambda s: report.exists(), what="a site to die before unmasking")
    died = json.loads(report.read_text())
    alive = [n for n in swarm.names if n != died["died"]]
    swarm.wait(alive)
    digest = identical_final(swarm, alive)
    assert all(swarm.result(n)["accuracy"] > 0.3 for n in alive)  # it trained (chance: 0.1)
    state = swarm.state()
    record = next(h for h in state["history"] if h["round"] == died["round"])
    # its masked update was pulled (a survivor), its self-mask rebuilt from two others' shares
    assert record["status"] == "merged", record
    assert died["died"] in record["secagg"]["survivors"]
    assert record["secagg"]["unmasked_by"] == alive
    later = [h for h in state["history"] if h["round"] > died["round"]]
    assert later and all(h["status"] == "merged" for h in later[-2:])
    assert state["latest_merged"]["digest"] == digest
