"""The training contract on a three-replica ledger: one state, one leader ranking, everywhere."""

from __future__ import annotations

import time

import pytest

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.tx import make_transaction

DIGEST = "ab" * 32
MERGED = "cd" * 32


def _states(net: LocalLedger, contract: str, height: int) -> list[dict]:
    """The contract state as each replica holds it once it has reached `height`."""
    states = []
    for replica in net.replicas:
        with LedgerClient([replica.grpc_address], net.identity("admin")) as client:
            for _ in range(200):
                answer = client.state(contract)
                if answer["height"] >= height:
                    break
                time.sleep(0.05)
            assert answer["height"] >= height  # ticks may follow; they change no contract
            states.append(answer["state"])
    return states


def _round_ready(net: LocalLedger, contract: str, timeout_s: float) -> dict[str, LedgerClient]:
    clients = {name: net.client(name) for name in ("p1", "p2", "p3")}
    settings = {"min_peers": 2, "leader_timeout_s": timeout_s}
    with net.client("admin") as admin:
        admin.submit("contract_create", contract=contract, payload=settings).raise_for_status()
    for name, client in clients.items():
        payload = {"endpoint": f"127.0.0.1:{7000 + int(name[1])}", "weight": 1, **settings}
        client.submit("register", contract=contract, payload=payload).raise_for_status()
    for client in clients.values():
        client.submit(
            "ready", contract=contract, round=1, payload={"digest": DIGEST, "size": 64}
        ).raise_for_status()
    return clients


def test_round_leader_ranking_and_timeout_agree_on_every_replica(ledger3: LocalLedger) -> None:
    contract = "hospital-study"
    clients = _round_ready(ledger3, contract, timeout_s=3.0)
    seal = clients["p2"].submit("seal", contract=contract, round=1).raise_for_status()
    ranking = seal.result["events"][0]["ranking"]
    assert sorted(ranking) == ["p1", "p2", "p3"]
    states = _states(ledger3, contract, seal.height)
    assert all(s == states[0] for s in states)
    assert states[0]["current"]["ranking"] == ranking

    first, second = ranking[0], ranking[1]
    sealed_at = states[0]["current"]["sealed_at"]
    waiter = ledger3.identity(second)
    # Time rules use ledger time, which no sender's timestamp moves: too early is refused…
    early = clients[second].submit(
        "leader_timeout", contract=contract, round=1, payload={"leader": first}
    )
    assert early.status == "rejected" and "cannot be timed out" in (early.reason or "")
    # …a transaction dated after the timeout is refused for its clock, never ordered…
    forged = make_transaction(
        waiter, "leader_timeout", contract=contract, round=1, payload={"leader": first},
        timestamp=sealed_at + 3600,
    )  # fmt: skip
    with pytest.raises(LedgerError, match="off ledger time"):
        clients[second].submit_tx(forged)
    # …and once a majority of the ledger nodes' clocks passed the timeout, it is accepted.
    deadline = time.monotonic() + 60
    while clients[second].status()["ledger_time"] < sealed_at + 3.0:
        assert time.monotonic() < deadline, "ledger time did not advance"
        time.sleep(0.1)
    # One vote of the two other participants is not a majority; the second is.
    third = ranking[2]
    vote = {"leader": first}
    voted = clients[second].submit("leader_timeout", contract=contract, round=1, payload=vote)
    assert voted.raise_for_status().result["events"][0]["kind"] == "timeout_voted"
    assert voted.result["leader"] == first
    handover = (
        clients[third]
        .submit("leader_timeout", contract=contract, round=1, payload=vote)
        .raise_for_status()
    )
    assert handover.result["leader"] == second

    # the replaced leader's late answer is refused; the new leader's is accepted
    answer = {"digest": MERGED, "size": 64}
    stale = clients[first].submit("merged", contract=contract, round=1, payload=answer)
    assert stale.status == "rejected" and "not the leader" in (stale.reason or "")
    done = clients[second].submit("merged", contract=contract, round=1, payload=answer)
    done.raise_for_status()
    states = _states(ledger3, contract, done.height)
    assert all(s == states[0] for s in states)
    record = states[0]["history"][0]
    assert record["leader"] == second and record["failed_leaders"] == [first]
    assert record["participants"] == ["p1", "p2", "p3"] and record["digest"] == MERGED
    assert states[0]["latest_merged"]["digest"] == MERGED
    assert states[0]["round"] == 2


def test_two_contracts_side_by_side(ledger1: LocalLedger) -> None:
    a = _round_ready(ledger1, "study-a", timeout_s=30.0)
    before_default = a["p1"].state(DEFAULT_CONTRACT)["state"]
    b_client = ledger1.client("p3")
    with ledger1.client("admin") as admin:
        admin.submit("contract_create", contract="study-b", payload={"min_peers": 1})
    b_client.submit(
        "register", contract="study-b", payload={"endpoint": "127.0.0.1:9", "min_peers": 1}
    ).raise_for_status()
    b_client.submit("ready", contract="study-b", round=1,
                    payload={"digest": DIGEST, "size": 1}).raise_for_status()  # fmt: skip
    b_client.submit("seal", contract="study-b", round=1).raise_for_status()
    b_client.submit("merged", contract="study-b", round=1,
                    payload={"digest": MERGED, "size": 1}).raise_for_status()  # fmt: skip

    state_a = a["p1"].state("study-a")["state"]
    state_b = b_client.state("study-b")["state"]
    assert state_a["round"] == 1 and not state_a["current"]["sealed"]
    assert sorted(state_a["current"]["ready"]) == ["p1", "p2", "p3"]
    assert state_a["settings"]["min_peers"] == 2 and state_b["settings"]["min_peers"] == 1
    assert state_b["round"] == 2 and list(state_b["members"]) == ["p3"]
    assert a["p1"].state(DEFAULT_CONTRACT)["state"] == before_default
    # a call naming one contract never lands in the other
    seal_a = a["p1"].submit("seal", contract="study-a", round=1).raise_for_status()
    assert b_client.state("study-b")["state"] == state_b
    assert seal_a.result["round"] == 1
