"""The sharded topology (`merge_topology: sharded`): every site that may lead merges one
contiguous shard of the model from everyone's pieces, and everyone assembles the shards.
Real peers (threads) on a real ledger replica, as in tests/test_streaming_merge.py, whose
helpers this reuses: p3 never leads, so it owns no shard and p1, p2 and p4 own one each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import test_streaming_merge as streaming
from test_streaming_merge import (
    SETTINGS,
    WEIGHTS,
    _assert_identical,
    _expected,
    _merged_round,
    _params,
    _record,
    _round,
    _spoil,
)

from openswarm.codec import digest_encoded
from openswarm.codec.chunks import CHUNK_BYTES
from openswarm.codec.shards import cut
from openswarm.codec.tensors import structure
from openswarm.node.peer import RoundResult, SwarmPeer

# the in-process swarm's fixtures (pytest finds them by these names)
ledger4, make_swarm = streaming.ledger4, streaming.make_swarm
SHARDED = replace(SETTINGS, merge_topology="sharded")


@pytest.fixture
def sharded(make_swarm) -> list[SwarmPeer]:
    return make_swarm(SHARDED)


@pytest.mark.parametrize("method", ["mean", "coordmedian", "trimmed_mean"])
def test_sharded_merges_equal_the_leader_topology_bit_for_bit(make_swarm, method: str) -> None:
    options = {"beta": 0.25} if method == "trimmed_mean" else {}
    peers = make_swarm(replace(SHARDED, merge_method=method, merge_options=options))
    results, record, inputs = _merged_round(peers, [11, 12, 13, 14])
    assert record["status"] == "merged" and not record["excluded"]
    owners = [s["owner"] for s in record["shards"]]
    assert owners == [n for n in record["ranking"] if n != "p3"]  # those that may lead
    expected = _expected(record, inputs, set(), method, **options)
    _assert_identical(results[0].params, expected)
    assert record["digest"] == digest_encoded(peers[0].transport.pack(expected))


def test_each_site_moves_about_two_shards_worth_per_other_site(sharded) -> None:
    results, record, _ = _merged_round(sharded, [31, 32, 33, 34])
    size = record["inputs"]["p1"]["size"]
    shards = cut(list(structure(results[0].params).values()), 3)
    assert [s["size"] for s in record["shards"]] == [s.size for s in shards]
    for peer in sharded:
        received = peer.fetcher.received.total - peer.received_before  # type: ignore[attr-defined]
        # an owner: 3 others' pieces of its third and 2 other shards; p3 just the 3 shards
        # (plus chunk digests and up to a chunk at each end of a piece)
        assert received < (5 / 3 if peer.name != "p3" else 1) * size + 8 * CHUNK_BYTES
    leader_topology_leader_reads = 3 * size
    assert max(p.fetcher.received.total - p.received_before for p in sharded) < (  # type: ignore[attr-defined]
        0.6 * leader_topology_leader_reads
    )


def test_a_chunk_spoiled_in_one_shard_leaves_its_site_out_of_every_shard(sharded) -> None:
    def flip(data: bytes) -> bytes:
        spoiled = bytearray(data)
        spoiled[9 * CHUNK_BYTES + 17] ^= 0x40  # in one shard only (the second of three)
        return bytes(spoiled)

    _spoil(sharded[2], flip)
    results, record, inputs = _merged_round(sharded, [21, 22, 23, 24])
    assert [e["name"] for e in record["excluded"]] == ["p3"]
    assert "does not match its digest" in record["excluded"][0]["reason"]
    _assert_identical(results[0].params, _expected(record, inputs, {"p3"}))


def test_nan_in_one_shard_leaves_its_site_out_of_every_shard(sharded) -> None:
    def poison(params: dict[str, Any]) -> None:
        params["last"][500] = np.nan  # in the last shard only

    results, record, inputs = _merged_round(sharded, [41, 42, 43, 44], poison)
    reason = "tensor 'last' contains NaN or infinity"
    assert record["excluded"] == [{"name": "p3", "reason": reason}]
    _assert_identical(results[0].params, _expected(record, inputs, {"p3"}))


def test_a_shard_owner_killed_mid_round_is_replaced(make_swarm) -> None:
    peers = make_swarm(replace(SHARDED, leader_timeout_s=8.0))
    _round(peers, [_params(s) for s in (1, 2, 3, 4)])  # the initial sync
    killed: list[str] = []

    def die(peer: SwarmPeer) -> None:
        def merge_shard(view: dict[str, Any], local: Any, index: int) -> None:
            if index == 1 and not killed:  # the second owner (not the leader) dies instead
                killed.append(peer.name)
                peer.close()
                raise SystemExit
            SwarmPeer._merge_shard(peer, view, local, index)

        peer._merge_shard = merge_shard  # type: ignore[method-assign]

    for peer in peers:
        die(peer)
    inputs = [_params(s) for s in (51, 52, 53, 54)]
    with ThreadPoolExecutor(len(peers)) as pool:
        futures = [pool.submit(p.sync, x, weight=WEIGHTS[p.name])
                   for p, x in zip(peers, inputs, strict=True)]  # fmt: skip
        outcomes: list[RoundResult | None] = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=120))
            except SystemExit:
                outcomes.append(None)
    assert len(killed) == 1
    alive = [peers[i] for i, o in enumerate(outcomes) if o is not None]
    results = [o for o in outcomes if o is not None]
    assert len(results) == 3 and len({r.digest for r in results}) == 1 and results[0].digest
    record = _record(alive[0], results[0].round)
    assert record["status"] == "merged"
    owners = [s["owner"] for s in record["shards"]]
    assert killed[0] not in owners and len(owners) == 3  # its shard went to the next owner
    # its snapshot could no longer be had: left out of every shard, as consistently
    assert [e["name"] for e in record["excluded"]] == [killed[0]]
    _assert_identical(results[0].params, _expected(record, inputs, set(killed)))


def test_a_mean_that_overflows_in_one_shard_equals_the_leader_topologys(sharded) -> None:
    # w·x near the float32 limit overflows in the first values of "big" (shard 0 only):
    # those values are summed again in float64, by their owner alone, the others not
    def huge(params: dict[str, Any]) -> None:
        params["big"][:1000] = np.float32(3e38)

    _round(sharded, [_params(s) for s in (1, 2, 3, 4)])  # the initial sync
    inputs = [_params(s) for s in (95, 96, 97, 98)]
    for params in inputs:
        huge(params)
    results = _round(sharded, inputs)
    assert len({r.digest for r in results}) == 1 and results[0].digest is not None
    record = _record(sharded[0], results[0].round)
    assert record["status"] == "merged" and not record["excluded"]
    _assert_identical(results[0].params, _expected(record, inputs, set()))
    assert np.all(results[0].params["big"][:1000] == np.float32(3e38))
