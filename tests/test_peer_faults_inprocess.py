"""Faults driven in one process: real peers (threads) on a real ledger replica, with the
faulty behaviour injected by subclassing the peer or by handing it a faulty client. The
subprocess versions are in tests/test_swarm.py and tests/adversarial/."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.local import LocalLedger
from openswarm.merge import mean
from openswarm.node.exchange import ExchangeClient, ExchangeError
from openswarm.node.peer import RoundResult, SwarmPeer, _Local
from openswarm.node.settings import NetworkConfig, SwarmSettings
from openswarm.node.watch import ContractWatch

CONTRACT = "inprocess"
SETTINGS = SwarmSettings(contract=CONTRACT, min_peers=2, leader_timeout_s=2.0,
                         extra_window_s=0.5, ledger_retry_s=20.0)  # fmt: skip
THREE = replace(SETTINGS, min_peers=3)  # every round waits for all three


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


class RefusingFetcher(ExchangeClient):
    """Fetches no snapshot from the peers named in `refused` (as if they never answered);
    merged models still come."""

    def __init__(self, identity: Any, refused: set[str]) -> None:
        super().__init__(identity)
        self.refused = refused
        self.refusals = 0

    def fetch(self, endpoint: str, kind: str, round: int, digest: str, **options: Any) -> bytes:
        if kind == "local" and options.get("peer") in self.refused:
            self.refusals += 1
            raise ExchangeError(f"{options['peer']} did not answer (injected)")
        return super().fetch(endpoint, kind, round, digest, **options)


class BusyLedger(LedgerClient):
    """Answers the first `busy` submissions as a rate-limited ledger does."""

    def __init__(self, endpoints: Any, identity: Any, busy: int) -> None:
        super().__init__(endpoints, identity)
        self.busy = busy

    def submit_tx(self, *args: Any, **kwargs: Any) -> Any:
        if self.busy > 0:
            self.busy -= 1
            raise LedgerError("RESOURCE_EXHAUSTED: too many calls (injected)", transient=True)
        return super().submit_tx(*args, **kwargs)


def _params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((4, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}


@pytest.fixture
def make_peer(ledger1: LocalLedger) -> Iterator[Callable[..., SwarmPeer]]:
    made: list[SwarmPeer] = []

    def make(name: str, kind: type[SwarmPeer] = SwarmPeer, settings: SwarmSettings = SETTINGS,
             **clients: Any) -> SwarmPeer:  # fmt: skip
        network = NetworkConfig(ledger=tuple(ledger1.endpoints),
                                identity=ledger1.identity_dir(name),
                                admin_identity=ledger1.identity_dir("admin"))  # fmt: skip
        peer = kind(settings, network, **clients)
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


def test_a_snapshot_the_leader_cannot_fetch_is_left_out_and_named(make_peer, ledger1) -> None:
    # Every peer's fetcher refuses p3: whoever leads cannot have p3's snapshot.
    fetchers = [RefusingFetcher(ledger1.identity(n), {"p3"}) for n in ("p1", "p2", "p3")]
    peers = [make_peer(f"p{i + 1}", settings=THREE, fetcher=f) for i, f in enumerate(fetchers)]
    _round(peers, [1, 2, 3])  # the initial sync fetches only the leader's model
    results = _round(peers, [4, 5, 6])
    record = _record(peers[0], results[0].round)
    if record["leader"] == "p3":  # it fetches nothing from itself: the others are merged
        assert record["status"] == "merged" and not record.get("excluded")
        return
    assert record["status"] == "merged" and sorted(record["participants"]) == ["p1", "p2", "p3"]
    assert [e["name"] for e in record["excluded"]] == ["p3"]
    assert "did not answer (injected)" in record["excluded"][0]["reason"]
    assert sum(f.refusals for f in fetchers) >= 1


def test_a_snapshot_holding_nan_is_left_out_by_the_merge_itself(make_peer) -> None:
    a, b, c = (make_peer(f"p{i}", settings=THREE) for i in (1, 2, 3))
    _round([a, b, c], [1, 2, 3])
    poisoned = _params(6)
    poisoned["w"][2, 1] = np.nan
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda p, x: p.sync(x), [a, b, c],
                                [_params(4), _params(5), poisoned]))  # fmt: skip
    record = _record(a, results[0].round)  # whoever led (p3 too) left p3's snapshot out
    assert record["status"] == "merged" and sorted(record["participants"]) == ["p1", "p2", "p3"]
    assert record["excluded"] == [{"name": "p3", "reason": "tensor 'w' contains NaN or infinity"}]
    assert results[0].digest == results[1].digest is not None
    expected = mean([_params(4), _params(5)])
    assert all(np.array_equal(results[0].params[k], v) for k, v in expected.items())


def test_a_busy_ledger_is_ridden_out(make_peer, ledger1) -> None:
    busy = BusyLedger(list(ledger1.endpoints), ledger1.identity("p1"), busy=3)
    a, b = make_peer("p1", ledger=busy), make_peer("p2")
    results = _round([a, b], [1, 2])
    assert busy.busy == 0 and results[0].digest == results[1].digest is not None
