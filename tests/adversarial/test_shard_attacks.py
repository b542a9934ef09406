"""Attacks on a sharded round by a site holding a valid certificate: real peers (threads)
on a real ledger replica, as in tests/test_streaming_merge.py and tests/test_sharded_merge.py,
whose helpers this reuses (p3 never leads, so it owns no shard)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
import pytest
import test_streaming_merge as streaming
from test_sharded_merge import SHARDED
from test_streaming_merge import _assert_identical, _expected, _merged_round, _params, _round

from openswarm.codec.chunks import leaves
from openswarm.node.exchange import ExchangeError
from openswarm.node.peer import SwarmPeer
from openswarm.node.shard_merge import MergedShard

# the in-process swarm's fixtures (pytest finds them by these names)
ledger4, make_swarm = streaming.ledger4, streaming.make_swarm


def _when_sharded(peer: SwarmPeer, act: Any) -> threading.Thread:
    """Run `act(state)` once `peer` sees round 2 sealed with shards still to come."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = peer.view()
            shards = state["current"]["shards"]
            if state["round"] == 2 and any(s["digest"] is None for s in shards):
                act(state)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_site_cannot_take_a_shard_or_an_owners_place(make_swarm) -> None:
    peers = make_swarm(SHARDED)
    hostile = peers[2]  # p3: may not lead, so it owns no shard
    tried: dict[str, str] = {}

    def attack(state: dict[str, Any]) -> None:
        current = state["current"]
        shard = current["shards"][0]
        forged = {"index": 0, "digest": "0" * 64, "root": "0" * 64, "size": 1}
        tried["post"] = hostile._submit("shard", 2, forged).reason or "applied"
        vote = {"index": 0, "owner": shard["owner"]}  # long before the owner's time is up
        tried["vote"] = hostile._submit("shard_timeout", 2, vote).reason or "applied"
        owner = state["members"][current["ranking"][0]]
        entry = current["ready"][current["ranking"][0]]
        try:  # only the round's leader, shard owners and auditors pull local snapshots
            hostile.fetcher.fetch(owner["endpoint"], "local", 2, entry["digest"],
                                  max_bytes=entry["size"], size=entry["size"],
                                  root=entry["root"], chunks=(0, 1),
                                  peer=current["ranking"][0])  # fmt: skip
            tried["pull"] = "fetched"
        except ExchangeError as exc:
            tried["pull"] = str(exc)
        # an owner (not the leader) may pull just the chunks of its own shard
        owner_name = current["shards"][1]["owner"]
        owner = next(p for p in peers if p.name == owner_name)
        target = state["members"]["p3"]
        p3_entry = current["ready"]["p3"]
        for what, chunks in (("whole", None), ("other", (0, 1))):
            try:
                owner.fetcher.fetch(target["endpoint"], "local", 2, p3_entry["digest"],
                                    max_bytes=p3_entry["size"], size=p3_entry["size"],
                                    root=p3_entry["root"], chunks=chunks, peer="p3")  # fmt: skip
                tried[what] = "fetched"
            except ExchangeError as exc:
                tried[what] = str(exc)

    _round(peers, [_params(s) for s in (1, 2, 3, 4)])  # the initial sync
    attacked = threading.Event()
    for peer in peers:  # shard 0 waits for the attack: the round stays open meanwhile
        honest = peer._merge_shard

        def merge_shard(view: Any, local: Any, index: int, honest: Any = honest) -> None:
            if index == 0:
                attacked.wait(60)
            honest(view, local, index)

        peer._merge_shard = merge_shard  # type: ignore[method-assign]
    thread = _when_sharded(hostile, lambda state: (attack(state), attacked.set()))
    inputs = [_params(s) for s in (61, 62, 63, 64)]
    results = _round(peers, inputs)
    thread.join()
    assert "does not own shard 0" in tried["post"]
    assert "cannot be timed out for another" in tried["vote"]
    assert "PERMISSION_DENIED" in tried["pull"] and "shard owners" in tried["pull"]
    assert "PERMISSION_DENIED" in tried["whole"] and "shard owners" in tried["whole"]
    assert "owns no shard held by chunks 0-1" in tried["other"]
    assert len({r.digest for r in results}) == 1 and results[0].digest is not None
    record = streaming._record(peers[0], results[0].round)
    assert not record["excluded"]
    _assert_identical(results[0].params, _expected(record, inputs, set()))


def test_asking_for_chunks_outside_a_model_is_refused(make_swarm) -> None:
    peers = make_swarm(SHARDED)
    _, record, _ = _merged_round(peers, [11, 12, 13, 14])
    holder = peers[0]
    stub = peers[1].fetcher._stub(holder.endpoint, holder.name)
    for chunks, leaves_too in (([0, 10**6], True), ([3, 2], True), ([-1, 1], True),
                               (["0", 1], True), ([0, 1], False)):  # fmt: skip
        ask = {"kind": "merged", "round": record["round"], "digest": record["digest"],
               "leaves": leaves_too, "chunks": chunks}  # fmt: skip
        with pytest.raises(grpc.RpcError) as info:
            list(stub(json.dumps(ask).encode(), timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, chunks


def test_a_shard_with_nan_is_loaded_by_nobody(make_swarm) -> None:
    # a hostile owner posts a shard whose bytes (consistent with its digest and root) hold
    # NaN: every site's assembly finds it, nobody proposes or loads it, and the shard goes
    # to the next owner, whose honest merge every site loads
    peers = make_swarm(replace(SHARDED, leader_timeout_s=5.0))

    def nan(data: bytearray) -> bytearray:
        np.frombuffer(data, np.float32, 1, len(data) - 8)[0] = np.nan  # in its last values
        return data

    _tamper(peers[3], nan)  # p4: may lead, so it owns a shard
    _round(peers, [_params(s) for s in (1, 2, 3, 4)])  # the initial sync
    inputs = [_params(s) for s in (71, 72, 73, 74)]
    results = _round(peers, inputs)
    assert len({r.digest for r in results}) == 1 and results[0].digest is not None
    record = streaming._record(peers[0], results[0].round)
    assert record["status"] == "merged" and "p4" not in [s["owner"] for s in record["shards"]]
    _assert_identical(results[0].params, _expected(record, inputs, set()))


def _tamper(peer: SwarmPeer, change: Callable[[bytearray], bytearray]) -> None:
    """From now on `peer` posts each shard it merges changed by `change` (with the digest
    and chunk root of what it sends, so only the contents tell)."""
    honest_run = peer._shard_merger.run

    def run(view: dict[str, Any], round: int, index: int, own: Any, specs: Any) -> MergedShard:
        merged = honest_run(view, round, index, own, specs)
        data = change(bytearray(merged.data))
        digest = hashlib.sha256(data).hexdigest()
        return replace(merged, data=data, digest=digest, leaves=leaves(data))

    peer._shard_merger.run = run  # type: ignore[method-assign]


def test_an_owner_that_does_not_serve_its_posted_shard_loses_it(make_swarm) -> None:
    # p4 posts its shard, then serves it to nobody: once leader_timeout_s has passed since
    # the post, the sites that could not fetch it vote, the next owner merges it, the round
    # completes with one digest everywhere (p4's included) and the same bits
    peers = make_swarm(replace(SHARDED, leader_timeout_s=5.0))
    hostile = peers[3]
    _round(peers, [_params(s) for s in (1, 2, 3, 4)])  # the initial sync
    honest_find = hostile.server.store.find
    hostile.server.store.find = lambda kind, round, digest: (  # type: ignore[method-assign]
        None if kind in ("shard", "merged") else honest_find(kind, round, digest)
    )  # (nor, should it lead, the model it joined: else it would be fetched, and checked)
    hostile._shard_assembly.store = type("Honest", (), {"find": staticmethod(honest_find)})()
    inputs = [_params(s) for s in (81, 82, 83, 84)]
    results = _round(peers, inputs)
    assert len({r.digest for r in results}) == 1 and results[0].digest is not None
    record = streaming._record(peers[0], results[0].round)
    assert record["status"] == "merged" and "p4" not in [s["owner"] for s in record["shards"]]
    _assert_identical(results[0].params, _expected(record, inputs, set()))


def test_a_shard_of_the_wrong_size_is_refused_and_its_model_loaded_by_nobody(make_swarm) -> None:
    # p4 posts a shard a few bytes short (root and digest its own): no site can join the
    # shards into the model (a whole model from the leader must match them too), and the
    # shard goes to the next owner, whose honest merge every site loads
    peers = make_swarm(replace(SHARDED, leader_timeout_s=5.0))
    _tamper(peers[3], lambda data: data[:-4])
    _round(peers, [_params(s) for s in (1, 2, 3, 4)])  # the initial sync
    inputs = [_params(s) for s in (91, 92, 93, 94)]
    results = _round(peers, inputs)
    assert len({r.digest for r in results}) == 1 and results[0].digest is not None
    record = streaming._record(peers[0], results[0].round)
    assert record["status"] == "merged" and "p4" not in [s["owner"] for s in record["shards"]]
    _assert_identical(results[0].params, _expected(record, inputs, set()))


def test_an_owner_that_steers_its_shard_is_caught_by_the_audit(make_swarm) -> None:
    # p4 adds 1 to every value it merges (its digest and root are those of what it sends):
    # the auditor's recomputation differs in p4's shard alone, the shard goes to the next
    # owner, and the merge that counts is the honest one, on every site
    peers = make_swarm(replace(SHARDED, audit=1))

    def steer(data: bytearray) -> bytearray:
        values = np.frombuffer(data, np.float32, 1000, len(data) - 4000)
        values += np.float32(1)  # steered, in values of "big" or "last"
        return data

    _tamper(peers[3], steer)
    _round(peers, [_params(s) for s in (1, 2, 3, 4)])  # the initial sync
    inputs = [_params(s) for s in (101, 102, 103, 104)]
    results = _round(peers, inputs)
    assert len({r.digest for r in results}) == 1 and results[0].digest is not None
    record = streaming._record(peers[0], results[0].round)
    assert record["status"] == "merged" and record["rejected_merges"]
    assert "p4" not in [s["owner"] for s in record["shards"]]
    assert peers[0].view()["demoted"] == []  # the leader joined the shards: not its fault
    _assert_identical(results[0].params, _expected(record, inputs, set()))
