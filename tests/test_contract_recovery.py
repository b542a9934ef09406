"""The contract's presence, voided merges and revocation (openswarm.ledger.contract)."""

from __future__ import annotations

import pytest
from test_contract import PEERS, Driver, digest, event_types

from openswarm.ledger.contract import (
    HISTORY_KEPT,
    ContractError,
    ContractSettings,
    TrainingContract,
)


def merged_round(d: Driver, names: list[str] = PEERS) -> tuple[str, int, str]:
    """Seal and merge the current round; returns (leader, round, merged digest)."""
    ranking = d.sealed_round(names)
    r = d.contract.current_round
    merged = digest(("merged", r))
    d.now += 1
    d.ok("merged", ranking[0], r, {"digest": merged, "size": 10})
    return ranking[0], r, merged


def test_every_call_and_heartbeat_record_presence() -> None:
    d = Driver()
    d.register(*PEERS)
    d.now += 7
    assert event_types(d.ok("heartbeat", "bob")) == []
    members = d.contract.snapshot()["members"]
    assert members["bob"]["last_seen"] == d.now
    assert members["alice"]["last_seen"] == d.now - 7
    d.refused("heartbeat", "bob", payload={"x": 1}, match="unknown payload field")
    d.refused("heartbeat", "mallory", match="register first")


def test_unavailable_merge_falls_back_to_the_one_before() -> None:
    d = Driver(leader_timeout_s=10)
    first_leader, r1, first = merged_round(d)
    for name in PEERS:
        if name != first_leader:
            d.ok("loaded", name, r1, {"digest": first})
    leader, r2, second = merged_round(d)
    other = next(n for n in PEERS if n != leader)
    report = {"digest": second}
    d.refused("merge_unavailable", other, r2, report, match="cannot be declared unavailable")
    d.refused("merge_unavailable", leader, r2, report, match="other than its leader")
    d.refused("merge_unavailable", other, r2, {"digest": digest("x")}, match="not the latest")
    d.now += 10
    result = d.ok("merge_unavailable", other, r2, report)
    assert result["events"][0]["kind"] == "merge_voided"
    assert result["events"][0]["fallback"] == r1
    state = d.contract.snapshot()
    assert state["latest_merged"]["digest"] == first
    assert state["history"][r2 - 1]["status"] == "voided:unavailable"
    # The fallback is the model everyone loaded; the void cannot be repeated.
    d.refused("merge_unavailable", other, r2, report, match="not the latest")


def test_a_merge_held_by_another_site_is_not_unavailable() -> None:
    d = Driver(leader_timeout_s=10)
    leader, r, merged = merged_round(d)
    holder, other = [n for n in PEERS if n != leader]
    d.ok("loaded", holder, r, {"digest": merged})
    d.now += 60
    d.refused("merge_unavailable", other, r, {"digest": merged}, match="fetch it from them")
    d.refused("merge_unavailable", holder, r, {"digest": merged}, match="holds the merged model")


def test_a_majority_refusal_voids_a_merge_and_demotes_its_leader() -> None:
    names = ["alice", "bob", "carol", "dave", "erin"]
    d = Driver()
    leader, r, merged = merged_round(d, names)
    others = [n for n in names if n != leader]
    bad = {"digest": merged, "reason": "tensor 'w' has shape (3,), expected (2,)"}
    first = d.ok("merge_refused", others[0], r, bad)
    assert first["events"][0]["refusals"] == 1 and first["events"][0]["needed"] == 3
    d.refused("merge_refused", others[0], r, bad, match="already refused")
    d.ok("merge_refused", others[1], r, bad)
    assert d.contract.snapshot()["latest_merged"]["digest"] == merged  # 2 of 4: not yet
    third = d.ok("merge_refused", others[2], r, bad)
    assert event_types(third) == ["merge_refused", "merge_voided"]
    state = d.contract.snapshot()
    assert state["latest_merged"] is None  # no merge before it: the next round starts over
    assert state["demoted"] == [leader]
    assert state["history"][r - 1]["status"] == "voided:refused"
    # The demoted site leads again only when nobody else is left in the ranking.
    for _ in range(4):
        ranking = d.sealed_round(names)
        assert ranking[-1] == leader
        d.now += 1
        d.ok("merged", ranking[0], d.contract.current_round, {"digest": digest(d.now), "size": 1})


def test_a_single_site_cannot_void_a_good_merge_by_refusing_it() -> None:
    d = Driver()
    leader, r, merged = merged_round(d)
    liar = next(n for n in PEERS if n != leader)
    result = d.ok("merge_refused", liar, r, {"digest": merged, "reason": "lies"})
    assert event_types(result) == ["merge_refused"]  # 1 of 2 others: no majority
    assert d.contract.snapshot()["latest_merged"]["digest"] == merged


def test_expelled_member_is_inactive_and_holds_nothing() -> None:
    d = Driver()
    leader, _, _ = merged_round(d)
    d.contract.expel(leader)
    state = d.contract.snapshot()
    assert state["members"][leader]["active"] is False
    assert leader not in state["latest_merged"]["holders"]
    d.refused("heartbeat", leader, match="has left")


@pytest.mark.parametrize("name", ["", "x" * 65, "a b", "../up", "-lead", "é"])
def test_contract_names_are_bounded_and_plain(name: str) -> None:
    with pytest.raises(ContractError, match="contract name"):
        TrainingContract(name, ContractSettings())


def test_an_over_long_endpoint_is_refused() -> None:
    d = Driver()
    long_host = "h" * 300
    d.refused("register", "alice", payload={"endpoint": f"{long_host}:1"}, match="longer than")


def test_a_merge_whose_leader_restarted_can_still_be_declared_unavailable() -> None:
    d = Driver(leader_timeout_s=10)
    leader, r, merged = merged_round(d)
    other = next(n for n in PEERS if n != leader)
    d.ok("register", leader, payload={"endpoint": "10.0.0.9:7000"})  # it came back empty
    assert d.contract.snapshot()["latest_merged"]["holders"] == []
    d.now += 10
    assert "merge_voided" in event_types(d.ok("merge_unavailable", other, r, {"digest": merged}))


def test_in_a_round_of_two_a_refusal_voids_but_does_not_demote() -> None:
    d = Driver(min_peers=2)
    leader, r, merged = merged_round(d, ["alice", "bob"])
    other = "bob" if leader == "alice" else "alice"
    result = d.ok("merge_refused", other, r, {"digest": merged, "reason": "bad"})
    assert event_types(result) == ["merge_refused", "merge_voided"]
    assert d.contract.snapshot()["demoted"] == []


def aborted_round(d: Driver, timeout_s: float) -> int:
    """Seal the current round and time out every leader in turn: it ends without a merge."""
    ranking = d.sealed_round(PEERS)
    r = d.contract.current_round
    for leader in ranking:
        d.now += timeout_s
        others = [n for n in ranking if n != leader]
        d.beat(*others)
        for voter in others:
            d.ok("leader_timeout", voter, r, {"leader": leader})
    assert d.contract.current_round == r + 1
    return r


def test_a_long_run_keeps_recent_rounds_and_what_a_void_falls_back_to() -> None:
    d = Driver(leader_timeout_s=10)
    started = d.now
    _, r1, first = merged_round(d)
    _, r2, second = merged_round(d)
    for _ in range(HISTORY_KEPT + 5):  # r1 and r2 fall out of the window
        aborted_round(d, 10)
    metrics = {"loss": 0.5, "epoch": 1}
    d.ok("metrics", "alice", d.contract.current_round - 1, metrics)
    old = d.contract.current_round - HISTORY_KEPT - 1
    d.refused("metrics", "alice", old, metrics, match=f"older than the last {HISTORY_KEPT}")
    state = d.contract.snapshot()
    rounds = [h["round"] for h in state["history"]]
    # the window, plus the latest merge and the one a void would fall back to
    assert rounds[:2] == [r1, r2] and len(rounds) == HISTORY_KEPT + 2
    assert rounds[2:] == list(
        range(d.contract.current_round - HISTORY_KEPT, d.contract.current_round)
    )
    assert state["merged_rounds"] == 2 and state["started_at"] == started
    # the latest merge, long ago, can still be declared unavailable: back to the first
    leader = state["latest_merged"]["leader"]
    other = next(n for n in PEERS if n != leader)
    result = d.ok("merge_unavailable", other, r2, {"digest": second})
    assert result["events"][0]["fallback"] == r1
    assert d.contract.snapshot()["latest_merged"]["digest"] == first
    merged_round(d)  # the next round closes: r2's record, no longer needed, is forgotten
    rounds = [h["round"] for h in d.contract.snapshot()["history"]]
    assert r1 in rounds and r2 not in rounds and len(rounds) == HISTORY_KEPT + 1
