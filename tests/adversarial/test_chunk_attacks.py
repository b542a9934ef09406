"""Attacks on chunk roots and mirrors by a site holding a valid certificate: real peers
(threads) on a real ledger replica, as in tests/test_streaming_merge.py, whose helpers this
reuses; p3 never leads, so an honest leader always pulls its snapshot."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest
import test_streaming_merge as streaming
from test_streaming_merge import (
    NAMES,
    SETTINGS,
    _assert_identical,
    _expected,
    _merged_round,
    _params,
    _record,
    _round,
)

from openswarm.node.exchange import Snapshot
from openswarm.node.peer import SwarmPeer

# the in-process swarm's fixtures (pytest finds them by these names)
ledger4, make_swarm, swarm = streaming.ledger4, streaming.make_swarm, streaming.swarm


def test_chunk_digests_that_do_not_give_the_announced_root_are_refused(swarm) -> None:
    hostile = swarm[2]
    honest = hostile.server.store.find

    def find(kind: str, round: int, digest: str) -> Snapshot | None:
        found = honest(kind, round, digest)
        if found is None or kind != "local":
            return found
        forged = bytearray(found.leaves)
        forged[5] ^= 1  # one chunk's digest changed: with it, any bytes for that chunk
        return Snapshot(kind, round, digest, found.data, bytes(forged))

    hostile.server.store.find = find  # type: ignore[method-assign]
    results, record, inputs = _merged_round(swarm, [81, 82, 83, 84])
    assert [e["name"] for e in record["excluded"]] == ["p3"]
    assert (
        "chunk digests do not give the root the ledger recorded"
        in (record["excluded"][0]["reason"])
    )
    _assert_identical(results[0].params, _expected(record, inputs, {"p3"}))


def test_announcing_another_sites_digest_displaces_nothing(make_swarm) -> None:
    # p3 says ready with p4's digest (and its own root): with audits, the leader keeps every
    # snapshot it pulled for the auditors; p3's must not take p4's place there.
    audited = replace(SETTINGS, audit=1)
    peers = make_swarm(audited)
    hostile = peers[2]
    submit = SwarmPeer._submit

    def copy_digest(self: SwarmPeer, kind: str, round: int, payload: Any = None) -> Any:
        if self is hostile and kind == "ready" and self.view()["latest_merged"] is not None:
            deadline = time.monotonic() + 20
            while "p4" not in self.view()["current"]["ready"]:
                if time.monotonic() > deadline:
                    pytest.fail("p4 never said ready")
                time.sleep(0.05)
            stolen = self.view()["current"]["ready"]["p4"]["digest"]
            payload = {**payload, "digest": stolen}
            mine = self._local  # and it serves its own snapshot under the stolen digest
            assert mine is not None
            self.server.store.publish("local", round, stolen, mine.data)
        return submit(self, kind, round, payload)

    hostile._submit = copy_digest.__get__(hostile)  # type: ignore[method-assign]
    results, record, inputs = _merged_round(peers, [91, 92, 93, 94])
    assert record["inputs"]["p3"]["digest"] == record["inputs"]["p4"]["digest"]
    assert not record["excluded"] and record["audit"]["attestations"]
    # every snapshot merged as its own site sent it: p3's bytes (pinned by its root), p4's
    _assert_identical(results[0].params, _expected(record, inputs, set()))
    leader = next(p for p in peers if p.name == record["leader"])
    mirrors = [k for k in leader.server.store._items if k[0] == "mirror"]
    assert len(mirrors) == len(NAMES) - 1  # one per site pulled, none overwritten


@pytest.mark.parametrize("with_root", [True, False])
def test_a_site_serving_its_snapshot_once_is_merged_and_audited_from_the_mirror(
    make_swarm, with_root: bool
) -> None:
    # p3 hands its snapshot to the leader and then to nobody: the auditors take the copy the
    # leader kept, also for a site that announced no chunk root (an older peer)
    peers = make_swarm(replace(SETTINGS, audit=1))
    hostile = peers[2]
    served = {"on": False, "count": 0}
    submit = SwarmPeer._submit

    def no_root(self: SwarmPeer, kind: str, round: int, payload: Any = None) -> Any:
        if self is hostile and kind == "ready" and served["on"] and not with_root:
            payload = {k: v for k, v in payload.items() if k != "root"}
        return submit(self, kind, round, payload)

    hostile._submit = no_root.__get__(hostile)  # type: ignore[method-assign]
    honest = hostile.server.store.find
    lock = threading.Lock()

    def once(kind: str, round: int, digest: str) -> Snapshot | None:
        found = honest(kind, round, digest)
        if kind == "local" and served["on"] and found is not None:
            with lock:
                served["count"] += 1
                if served["count"] > 1:
                    return None
        return found

    hostile.server.store.find = once  # type: ignore[method-assign]
    _round(peers, [_params(s) for s in (1, 2, 3, 4)])  # the initial sync
    served["on"] = True
    inputs = [_params(s) for s in (101, 102, 103, 104)]
    results = _round(peers, inputs)
    record = _record(peers[0], results[0].round)
    assert record["status"] == "merged" and not record["excluded"], record
    assert ("root" in record["inputs"]["p3"]) is with_root
    assert record["audit"]["attestations"] and not record["audit"]["abstained"], record["audit"]
    _assert_identical(results[0].params, _expected(record, inputs, set()))
