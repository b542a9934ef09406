"""Swarms of real site processes whose merges are server-side optimizers (merge/server_opt.py):
the optimizer's state travels in each round's merged model, so whichever site leads next,
or an auditor, continues it; the sites load only the model part."""

from __future__ import annotations

import json
import threading

import pytest
from harness import identical_final

from openswarm import DEFAULT_CONTRACT

pytestmark = pytest.mark.slow

#: The swarm script's model: Linear(64, 32) and Linear(32, 10), as float32 values.
MODEL_VALUES = 64 * 32 + 32 + 32 * 10 + 10
#: A step of at most about this much per value and round (fedadam, from zero state:
#: server_lr * m / (sqrt(v) + tau) with m = 0.1 delta, v = 0.01 delta**2 is about server_lr).
TINY_LR = 1e-4


def ledger_events(swarm, kind: str) -> list[dict]:
    """Events of `kind` in the ledger's applied transactions."""
    found = []
    for block in swarm.tx_blocks():
        result = block.get("outcome", {}).get("result") or {}
        found += [e for e in result.get("events", []) if e.get("kind") == kind]
    return found


def test_fedadam_sites_end_identical_with_its_state_carried_from_leader_to_leader(
    swarm_factory,
) -> None:
    # A tiny server learning rate: if the optimizer steps each merge, the model stays
    # within a few steps of its initial one (untrained); a plain mean would train it.
    # An auditor recomputes each merge from the same snapshots and the same previous merged
    # model with its state: a leader's step must be reproducible bit for bit.
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="3", MERGE_METHOD="fedadam", AUDIT="1",
                          MERGE_OPTIONS=json.dumps({"server_lr": TINY_LR}))  # fmt: skip
    swarm.start_all()
    swarm.wait()
    final = identical_final(swarm, swarm.names)
    state = swarm.state()
    assert state["settings"]["merge_method"] == "fedadam"
    assert state["settings"]["merge_options"] == {"server_lr": TINY_LR}
    history = state["history"]
    assert len(history) >= 4 and all(h["status"] == "merged" for h in history), history
    # the initial sync is the leader's snapshot (no state: zero); every later merged model
    # holds the model and two state tensors per value (m and v, float32): about three times
    # the model's 9.6 KB
    sizes = [h["size"] for h in history]
    assert sizes[0] < 1.1 * 4 * MODEL_VALUES, sizes
    assert all(size > 3 * 4 * MODEL_VALUES for size in sizes[1:]), sizes
    # so the ledger's digest covers model and state, not the model the sites loaded
    assert state["latest_merged"]["digest"] != final
    assert ledger_events(swarm, "merge_rejected") == []
    for h in history[1:]:  # every merge after the hand-out was confirmed by its auditor
        assert not h["rejected_merges"] and not h["failed_leaders"], h
        [(auditor, verdict)] = h["audit"]["attestations"].items()
        assert verdict == f"{h['digest']}:{h['size']}" and auditor != h["leader"], h
    # leaders took turns: a new one stepped from the state another one left
    leaders = [h["leader"] for h in history[1:]]
    assert len(set(leaders)) >= 2, leaders
    results = [swarm.result(n) for n in swarm.names]
    # stepped by at most ~TINY_LR a value per round from a torch initialisation, whose
    # values lie within 1/sqrt(fan_in) = 1/sqrt(32); a plain mean of SGD at 0.2 trains it
    rounds = len(history)
    assert all(r["largest_param"] < 32**-0.5 + 20 * rounds * TINY_LR for r in results), results
    assert all(r["accuracy"] < 0.5 for r in results), results


def test_a_fedadam_leader_killed_during_merge_is_replaced_and_its_state_continued(
    swarm_factory,
) -> None:
    # A larger model (2M values, and its state twice) makes the leader's merge take a while.
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="2", LEADER_TIMEOUT="8",
                          BALLAST="2000000", BATCH_DELAY_S="0.02",
                          MERGE_METHOD="fedadam")  # fmt: skip
    killed: list[str] = []

    def kill_second_round_leader() -> None:
        for block in swarm.ledger.client("admin").stream(start=0, contract=DEFAULT_CONTRACT):
            events = (block.get("outcome", {}).get("result") or {}).get("events", [])
            for event in events:
                if event.get("kind") == "sealed" and event["round"] >= 2:
                    swarm.kill(event["leader"])
                    killed.append(event["leader"])
                    return

    watcher = threading.Thread(target=kill_second_round_leader, daemon=True)
    watcher.start()
    swarm.start_all()
    watcher.join(180)
    assert killed, "no second round was sealed"
    survivors = [n for n in swarm.names if n not in killed]
    swarm.wait(survivors)
    state = swarm.state()
    history = state["history"]
    handed_over = [h for h in history if killed[0] in h["failed_leaders"]]
    assert handed_over, history
    record = handed_over[0]
    assert record["status"] == "merged" and record["leader"] in survivors
    # the survivor stepped from the previous merged model and its state: every later round
    # merged too, and the survivors loaded the same model part of the last one
    later = [h for h in history if h["round"] >= record["round"]]
    assert all(h["status"] == "merged" for h in later), later
    final = identical_final(swarm, survivors)
    assert state["latest_merged"]["digest"] != final  # it carries the state besides
