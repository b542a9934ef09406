"""The contract's sharded rounds (openswarm.ledger.shards): who owns which shard, consistent
exclusions, silent owners voted out, and the leader's turn once every shard is in."""

from __future__ import annotations

from typing import Any

import pytest
from test_contract import Driver, digest

from openswarm.ledger.contract import ContractError, ContractSettings

NAMES = ["alice", "bob", "carol", "dave"]


def shard_call(index: int, tag: object, excluded: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    payload: dict[str, Any] = {"index": index, "digest": digest(("shard", tag)),
                               "root": digest(("root", tag)), "size": 10}  # fmt: skip
    if excluded:
        payload["excluded"] = [{"name": n, "reason": "bad snapshot"} for n in excluded]
    return payload


def sharded_round(d: Driver, lead: bool = True) -> list[str]:
    """Registers NAMES (dave never leads unless `lead`), merges round 1 (the leader hands
    out its own model) and seals round 2; returns the shard owners."""
    d.register(*NAMES[:3])
    d.ok("register", "dave", payload={"endpoint": "10.0.0.4:7000", "lead": lead})
    ranking = d.sealed_round(NAMES)
    d.ok("merged", ranking[0], 1, {"digest": digest((ranking[0], 1)), "size": 100})
    d.sealed_round(NAMES)
    return [s["owner"] for s in d.contract.snapshot()["current"]["shards"]]


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"merge_method": "geomedian"}, "coordinate-wise merge method"),
        ({"merge_method": "krum"}, "stays with merge_topology leader"),
        ({"compression": "int8"}, "lossless compression"),
        ({"merge_topology": "ring"}, "merge_topology must be one of leader, sharded"),
    ],
)
def test_what_a_sharded_contract_refuses(setting: dict[str, Any], match: str) -> None:
    with pytest.raises(ContractError, match=match):
        ContractSettings(**{"merge_topology": "sharded", **setting})


def test_sites_that_may_lead_own_one_shard_each_in_ranking_order() -> None:
    d = Driver(merge_topology="sharded", min_peers=4)
    d.register(*NAMES[:3])
    d.ok("register", "dave", payload={"endpoint": "10.0.0.4:7000", "lead": False})
    ranking = d.sealed_round(NAMES)
    assert d.contract.snapshot()["current"]["shards"] == []  # round 1: its leader's own model
    d.ok("merged", ranking[0], 1, {"digest": digest("first"), "size": 100})
    ranking = d.sealed_round(NAMES)
    owners = [s["owner"] for s in d.contract.snapshot()["current"]["shards"]]
    assert owners == [n for n in ranking if n != "dave"] and owners[0] == d.contract.leader


def test_only_the_owner_posts_its_shard_and_the_leader_waits_for_all() -> None:
    d = Driver(merge_topology="sharded", min_peers=4)
    owners = sharded_round(d, lead=False)
    leader = d.contract.leader
    d.refused("shard", owners[1], 2, shard_call(0, "a"), match="does not own shard 0")
    d.refused("shard", owners[0], 2, shard_call(3, "a"), match="has 3 shards, no shard 3")
    d.refused("merged", leader, 2, {"digest": digest("m"), "size": 30}, match="not all are in")
    d.ok("shard", owners[0], 2, shard_call(0, "a"))
    d.refused("shard", owners[0], 2, shard_call(0, "b"), match="merged already")
    d.ok("shard", owners[1], 2, shard_call(1, "a"))
    d.now += 25  # past leader_timeout_s, but the leader's clock has not started yet
    d.beat(*NAMES)
    d.refused("leader_timeout", owners[1], 2, {"leader": leader}, match="still being merged")
    [event] = d.ok("shard", owners[2], 2, shard_call(2, "a"))["events"]
    assert event["kind"] == "shard_merged" and event["complete"]
    assert d.contract.snapshot()["current"]["leader_since"] == d.now
    d.ok("merged", leader, 2, {"digest": digest("m"), "size": 30})
    record = d.contract.snapshot()["history"][-1]
    assert [s["digest"] for s in record["shards"]] == [digest(("shard", "a"))] * 3
    assert [s["owner"] for s in record["shards"]] == owners


def test_exclusions_stay_consistent_across_shards() -> None:
    d = Driver(merge_topology="sharded", min_peers=4)
    owners = sharded_round(d, lead=False)
    leader = d.contract.leader
    d.ok("shard", owners[0], 2, shard_call(0, "a"))
    # shard 1 found dave's part bad: shard 0, merged with dave, goes again
    [event] = d.ok("shard", owners[1], 2, shard_call(1, "b", ["dave"]))["events"]
    assert event["redo"] == [0] and event["excluded"] == ["dave"] and not event["complete"]
    shards = d.contract.snapshot()["current"]["shards"]
    assert shards[0]["digest"] is None and shards[1]["digest"] is not None
    # a shard merged with dave is refused now
    d.refused("shard", owners[2], 2, shard_call(2, "c"), match="must leave out dave")
    d.ok("shard", owners[2], 2, shard_call(2, "c", ["dave"]))
    d.ok("shard", owners[0], 2, shard_call(0, "d", ["dave"]))
    d.refused("merged", leader, 2, {"digest": digest("m"), "size": 30},
              match="must name whom the shards of round 2 left out: dave")  # fmt: skip
    excluded = [{"name": "dave", "reason": "bad snapshot"}]
    d.ok("merged", leader, 2, {"digest": digest("m"), "size": 30, "excluded": excluded})
    assert d.contract.snapshot()["history"][-1]["excluded"] == excluded


def test_a_silent_owner_is_voted_out_and_its_shard_moves_on() -> None:
    d = Driver(
        merge_topology="sharded", min_peers=4, leader_timeout_s=30.0, presence_timeout_s=120.0
    )
    owners = sharded_round(d)
    silent = owners[1]
    others = [n for n in NAMES if n != silent]
    d.now += 29.0
    d.refused("shard_timeout", others[0], 2, {"index": 1, "owner": silent},
              match="cannot be timed out for another 1.000 s")  # fmt: skip
    d.now += 1.0
    d.beat(*others)
    d.refused("shard_timeout", silent, 2, {"index": 1, "owner": silent}, match="cannot vote itself")
    [voted] = d.ok("shard_timeout", others[0], 2, {"index": 1, "owner": silent})["events"]
    assert voted["kind"] == "shard_timeout_voted" and voted["votes"] == [others[0]]
    [changed] = d.ok("shard_timeout", others[1], 2, {"index": 1, "owner": silent})["events"]
    assert changed["kind"] == "shard_owner_changed" and changed["previous"] == silent
    assert changed["owner"] == owners[2]  # the next owner in ranking order
    d.refused("shard", silent, 2, shard_call(1, "late"), match="does not own shard 1")
    d.refused("shard_timeout", others[0], 2, {"index": 1, "owner": silent},
              match="owner already changed")  # fmt: skip
    d.ok("shard", owners[2], 2, shard_call(1, "x"))
    shards = d.contract.snapshot()["current"]["shards"]
    assert shards[1]["owner"] == owners[2] and shards[1]["since"] == d.now - 0.0


def test_a_shard_with_no_owner_left_aborts_the_round() -> None:
    d = Driver(merge_topology="sharded", min_peers=2, leader_timeout_s=10.0)
    d.register("alice")
    d.ok("register", "bob", payload={"endpoint": "10.0.0.2:7000", "lead": False})
    ranking = d.sealed_round(["alice", "bob"])
    d.ok("merged", ranking[0], 1, {"digest": digest("first"), "size": 100})
    d.sealed_round(["alice", "bob"])
    d.now += 10.0
    d.beat("bob")
    [aborted] = d.ok("shard_timeout", "bob", 2, {"index": 0, "owner": "alice"})["events"]
    assert aborted["kind"] == "round_aborted"
    assert d.contract.snapshot()["history"][-1]["status"] == "aborted"


def test_leader_rounds_have_no_shards() -> None:
    d = Driver(min_peers=3)
    ranking = d.sealed_round()
    d.ok("merged", ranking[0], 1, {"digest": digest("first"), "size": 1})
    d.sealed_round()
    assert d.contract.snapshot()["current"]["shards"] == []
    d.refused("shard", ranking[0], 2, shard_call(0, "a"), match="is not merged in shards")
    record = d.contract.snapshot()["history"][-1]
    assert record["shards"] is None


def test_a_posted_shard_nobody_can_fetch_goes_to_the_next_owner() -> None:
    d = Driver(merge_topology="sharded", min_peers=4, leader_timeout_s=30.0,
               presence_timeout_s=120.0)  # fmt: skip
    owners = sharded_round(d)
    for index, owner in enumerate(owners):
        d.ok("shard", owner, 2, shard_call(index, "a"))
    gone = owners[2]
    voters = [n for n in NAMES if n != gone]
    d.now += 29.0  # its time counts from its post
    d.refused("shard_timeout", voters[0], 2, {"index": 2, "owner": gone},
              match="cannot be declared unavailable for another 1.000 s")  # fmt: skip
    d.now += 1.0
    d.beat(*voters)
    d.ok("shard_timeout", voters[0], 2, {"index": 2, "owner": gone})
    [changed] = d.ok("shard_timeout", voters[1], 2, {"index": 2, "owner": gone})["events"]
    assert changed["kind"] == "shard_owner_changed" and changed["owner"] == owners[3]
    shard = d.contract.snapshot()["current"]["shards"][2]
    assert shard["digest"] is None and shard["owner"] == owners[3]  # to be merged again
    leader = d.contract.leader
    d.refused("merged", leader, 2, {"digest": digest("m"), "size": 40}, match="not all are in")
    d.ok("shard", owners[3], 2, shard_call(2, "b"))
    d.refused("merged", leader, 2, {"digest": digest("m"), "size": 31}, match="must be 40")
    d.ok("merged", leader, 2, {"digest": digest("m"), "size": 40})


def test_a_shard_may_leave_out_only_a_minority() -> None:
    d = Driver(merge_topology="sharded", min_peers=4)
    owners = sharded_round(d, lead=False)
    others = [n for n in NAMES if n != owners[0]]
    d.refused("shard", owners[0], 2, shard_call(0, "a", others[:2]),
              match="only a minority of the round's 4 participants")  # fmt: skip
    d.ok("shard", owners[0], 2, shard_call(0, "a", others[:1]))


def test_auditors_that_find_a_shard_wrong_send_it_to_the_next_owner() -> None:
    d = Driver(merge_topology="sharded", min_peers=4, audit=3)
    owners = sharded_round(d)
    for index, owner in enumerate(owners):
        d.ok("shard", owner, 2, shard_call(index, "a"))
    leader = d.contract.leader
    proposed = d.ok("merged", leader, 2, {"digest": digest("m"), "size": 40})["events"][0]
    auditors = proposed["auditors"]
    assert len(auditors) == 3
    wrong = {"digest": digest("recomputed"), "size": 40}
    agreeing = {"digest": digest("m"), "size": 40, "shards": [1]}
    d.refused("attest", auditors[0], 2, agreeing, match="but the digest agrees")
    d.refused("attest", auditors[0], 2, {**wrong, "shards": [9]}, match="distinct shards")
    d.ok("attest", auditors[0], 2, {**wrong, "shards": [1]})
    events = d.ok("attest", auditors[1], 2, {**wrong, "shards": [1, 2]})["events"]
    kinds = [e["kind"] for e in events]
    assert kinds == ["attested", "merge_rejected", "shard_owner_changed"]  # shard 2: one vote
    assert events[1]["shards"] == [1] and events[2]["index"] == 1
    state = d.contract.snapshot()
    assert state["current"]["leader"] == leader and leader not in state["demoted"]
    assert state["current"]["shards"][1]["digest"] is None  # merged again by its next owner
    assert state["current"]["shards"][1]["owner"] == owners[2]
    d.ok("shard", owners[2], 2, shard_call(1, "right"))
    # the new proposal is what the auditors recomputed: it counts at once
    [merged] = d.ok("merged", leader, 2, {"digest": digest("recomputed"), "size": 40})["events"]
    assert merged["kind"] == "merged"


def test_shards_stay_put_while_their_merge_is_audited() -> None:
    d = Driver(merge_topology="sharded", min_peers=4, audit=1, leader_timeout_s=30.0,
               presence_timeout_s=120.0)  # fmt: skip
    owners = sharded_round(d)
    for index, owner in enumerate(owners):
        d.ok("shard", owner, 2, shard_call(index, "a"))
    d.now += 30.0
    d.beat(*NAMES)
    voter = next(n for n in NAMES if n not in (owners[1], d.contract.leader))
    d.ok("leader_timeout", voter, 2, {"leader": d.contract.leader})  # one vote, not enough
    d.ok("merged", d.contract.leader, 2, {"digest": digest("m"), "size": 40})
    d.refused("shard_timeout", voter, 2, {"index": 1, "owner": owners[1]},
              match="awaits its audit")  # fmt: skip


def test_timeout_votes_of_an_earlier_wait_do_not_count_once_the_shards_are_in_again() -> None:
    d = Driver(merge_topology="sharded", min_peers=4, leader_timeout_s=30.0,
               presence_timeout_s=120.0)  # fmt: skip
    owners = sharded_round(d)
    for index, owner in enumerate(owners):
        d.ok("shard", owner, 2, shard_call(index, "a"))
    leader = d.contract.leader
    d.now += 30.0
    d.beat(*NAMES)
    voter = next(n for n in NAMES if n not in (owners[1], leader))
    d.ok("leader_timeout", voter, 2, {"leader": leader})
    others = [n for n in NAMES if n != owners[1]]
    for name in others[:2]:
        d.ok("shard_timeout", name, 2, {"index": 1, "owner": owners[1]})
    assert d.contract.snapshot()["current"]["shards"][1]["digest"] is None  # reopened
    new_owner = d.contract.snapshot()["current"]["shards"][1]["owner"]
    d.ok("shard", new_owner, 2, shard_call(1, "b"))
    assert d.contract.snapshot()["current"]["timeout_votes"] == []
