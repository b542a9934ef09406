"""Leadership moves only when the participants agree: real site processes on a real ledger
(tests/swarm_script.py, faults from faults.py), one or two of them hostile or failing."""

from __future__ import annotations

import json
import re

import pytest
from harness import identical_final

pytestmark = pytest.mark.slow


def test_a_minoritys_early_or_forged_timeout_votes_change_nothing(swarm_factory) -> None:
    # A larger model (BALLAST) keeps each round sealed long enough for the votes to land.
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="3", BALLAST="2000000")
    report = swarm.root / "votes.json"
    swarm.start("site-1")
    swarm.start("site-2")
    swarm.start("site-3", FAULT="vote_early", FAULT_REPORT=str(report))
    swarm.wait()
    votes = json.loads(report.read_text())["votes"]
    forged, *early = votes
    assert forged["status"] == "refused" and "off ledger time" in forged["reason"], forged
    assert early and all(v["status"] == "rejected" for v in early), early
    # too early, or (the leader was that quick) too late: the round was over already
    assert all(re.search("cannot be timed out|is not open", v["reason"]) for v in early), early
    assert any("cannot be timed out" in v["reason"] for v in early), early
    history = swarm.state()["history"]
    assert all(h["failed_leaders"] == [] and h["status"] == "merged" for h in history), history
    assert all(h["leader"] == h["ranking"][0] for h in history)  # nobody was voted out
    identical_final(swarm, swarm.names)


def test_a_silent_leader_is_voted_out_also_when_a_participant_died(swarm_factory) -> None:
    # site-2 and site-3 never lead; the first of them to take part in a round the other
    # leads exits on the spot. In that round site-1 is the only live other participant:
    # its vote alone is the majority that replaces the silent leader, and it merges.
    # Presence is judged in ledger time, which an idle ledger advances only every 10 s
    # (replica.IDLE_TICK_S): the first calls after the idle start are stamped up to 10 s
    # late, so a presence timeout under that would make live sites look gone.
    swarm = swarm_factory(3, EPOCHS="2", MIN_PEERS="2", LEADER_TIMEOUT="4",
                          PRESENCE_TIMEOUT="20", AWAIT_MEMBERS="3")  # fmt: skip
    marker, report = swarm.root / "died.marker", swarm.root / "died.json"
    faults = {"FAULT_MARKER": str(marker), "FAULT_REPORT": str(report)}
    swarm.start("site-1")
    swarm.start("site-2", FAULT="silent_die_under:site-3", **faults)
    swarm.start("site-3", FAULT="silent_die_under:site-2", **faults)
    swarm.wait()
    died = json.loads(report.read_text())
    dead, silent = died["died"], died["leader"]
    history = swarm.state()["history"]
    [record] = [h for h in history if h["round"] == died["round"]]
    assert record["failed_leaders"] == [silent], record
    assert record["status"] == "merged" and record["leader"] == "site-1", record
    assert dead in record["participants"]
    if any(h["digest"] for h in history if h["round"] < record["round"]):  # a merge, not the
        assert dead in {e["name"] for e in record["excluded"]}  # initial sync's hand-out
    # every later round the silent site led went to site-1 the same way
    later = [h for h in history if h["round"] > died["round"] and h["ranking"][0] == silent]
    assert all(h["failed_leaders"] == [silent] and h["leader"] == "site-1" for h in later)
    assert all(h["leader"] not in ("site-2", "site-3") for h in history if h["digest"])
    identical_final(swarm, ["site-1", silent])
