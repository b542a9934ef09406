"""Faults driven in one process: real peers (threads) on a real ledger replica, with the
faulty behaviour injected by subclassing the peer. The subprocess versions are in
tests/test_swarm.py and tests/adversarial/."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerClient
from openswarm.ledger.local import LocalLedger
from openswarm.node.peer import RoundResult, SwarmPeer, _Local
from openswarm.node.settings import NetworkConfig, SwarmSettings
from openswarm.node.watch import ContractWatch

CONTRACT = "inprocess"
SETTINGS = SwarmSettings(contract=CONTRACT, min_peers=2, leader_timeout_s=2.0,
                         extra_window_s=0.5, ledger_retry_s=20.0)  # fmt: skip


class SilentLeader(SwarmPeer):
    """Takes part in rounds but never does a leader's work while `silent` is set."""

    silent = threading.Event()

    def _lead(self, view: dict[str, Any], local: _Local) -> None:
        if not self.silent.is_set():
            super()._lead(view, local)


class Vanishing(SwarmPeer):
    """Says ready for a round, then is gone: no server, no heartbeat, no votes."""

    def _follow(self, local: _Local) -> RoundResult | None:
        self.close()
        return None


def _params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((4, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}


@pytest.fixture
def make_peer(ledger1: LocalLedger) -> Iterator[Callable[..., SwarmPeer]]:
    made: list[SwarmPeer] = []

    def make(name: str, kind: type[SwarmPeer] = SwarmPeer) -> SwarmPeer:
        network = NetworkConfig(ledger=tuple(ledger1.endpoints),
                                identity=ledger1.identity_dir(name),
                                admin_identity=ledger1.identity_dir("admin"))  # fmt: skip
        peer = kind(SETTINGS, network)
        peer.register()
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


def _round(peers: list[SwarmPeer], seeds: list[int]) -> list[RoundResult]:
    with ThreadPoolExecutor(len(peers)) as pool:
        return list(pool.map(lambda p, s: p.sync(_params(s)), peers, seeds))


def _record(peer: SwarmPeer, round: int) -> dict[str, Any]:
    history = peer.ledger.state(CONTRACT)["state"]["history"]
    return next(h for h in history if h["round"] == round)


def test_silent_leaders_are_voted_out_and_the_swarm_recovers(make_peer) -> None:
    a, b = make_peer("p1", SilentLeader), make_peer("p2", SilentLeader)
    first = _round([a, b], [1, 2])  # the initial sync: one leader hands out its model
    assert first[0].digest == first[1].digest is not None
    SilentLeader.silent.set()
    try:
        silent = _round([a, b], [3, 4])  # whoever leads says nothing: each is voted out
    finally:
        SilentLeader.silent.clear()
    assert all(r.params is None for r in silent)
    record = _record(a, silent[0].round)
    assert record["status"] != "merged" and len(record["failed_leaders"]) == 2
    again = _round([a, b], [5, 6])  # both train on; the next round merges both
    assert again[0].digest == again[1].digest is not None
    assert sorted(again[0].participants) == ["p1", "p2"]


def test_a_peer_that_vanishes_after_saying_ready_is_left_out(make_peer) -> None:
    a, b, c = make_peer("p1"), make_peer("p2"), make_peer("p3", Vanishing)
    _round([a, b], [1, 2])
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda p, s: p.sync(_params(s)), [a, b, c], [3, 4, 5]))
    # Whether it was sealed into the round (even as its leader: voted out) or came too late,
    # the other two merge without it.
    merged = results[:2]
    assert merged[0].digest == merged[1].digest is not None
    record = _record(a, merged[0].round)
    assert record["status"] == "merged" and record["leader"] in ("p1", "p2")
    assert "p3" not in record["participants"] or any(
        e["name"] == "p3" for e in record.get("excluded", [])
    )


def test_a_broken_watch_reopens_and_resumes(ledger1: LocalLedger) -> None:
    identity = ledger1.identity("p1")
    watch = ContractWatch(list(ledger1.endpoints), identity, DEFAULT_CONTRACT, retry_s=60.0)
    try:
        height, state = watch.latest()
        assert state is not None and "p1" not in state["members"]
        ledger1.stop()  # the replica goes away: the stream breaks
        ledger1.start()
        ledger1.wait_ready()
        with LedgerClient(ledger1.endpoints, identity) as client:
            payload = {"endpoint": "127.0.0.1:9", "weight": 1.0}
            client.submit("register", contract=DEFAULT_CONTRACT, payload=payload).raise_for_status()
        height, state = watch.wait_newer(height, 60.0)
        assert state is not None and "p1" in state["members"]  # the change after the break
        assert watch.reconnects >= 1
        with LedgerClient(ledger1.endpoints, identity) as client:
            served = client.status()["served"]  # what the ledger sent since its restart
        assert served["Stream"]["messages"] >= 1 and served["Submit"]["messages"] == 1
    finally:
        watch.close()
