"""The leader's streaming `mean`: snapshots checked chunk by chunk against the root their
sites announced, added one at a time in ranking order, written straight into the merged
model's encoding. Real peers (threads) on a real ledger replica; the snapshots span several
chunks, and what one site serves is spoiled where it says."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import running_ledger

import openswarm.node.leader as leader_module
from openswarm.codec.chunks import CHUNK_BYTES, LEAF_BYTES, chunk_count, chunk_root
from openswarm.codec.tensors import structure
from openswarm.codec.transport import Transport
from openswarm.ledger.local import LocalLedger
from openswarm.merge import merge
from openswarm.merge.layered import merge_layered
from openswarm.node.exchange import Snapshot
from openswarm.node.leader import mirror_key
from openswarm.node.peer import RoundResult, SwarmPeer
from openswarm.node.settings import NetworkConfig, SwarmSettings

CONTRACT = "streaming"
SETTINGS = SwarmSettings(contract=CONTRACT, min_peers=4, leader_timeout_s=20.0,
                         extra_window_s=0.5, ledger_retry_s=20.0, weight=1)  # fmt: skip
NAMES = ("p1", "p2", "p3", "p4")
WEIGHTS = {"p1": 3, "p2": 1, "p3": 7, "p4": 2}
SIZE = 16 * CHUNK_BYTES  # each snapshot spans 17 chunks (with its header)


def _params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "big": rng.standard_normal(SIZE // 4 - 1000).astype(np.float32),
        "small": rng.standard_normal((10, 10)).astype(np.float32),
        "steps": rng.integers(0, 100, 7).astype(np.int64),
        "last": rng.standard_normal(996).astype(np.float32),
    }


@pytest.fixture
def ledger4(tmp_path: Path) -> Iterator[LocalLedger]:
    yield from running_ledger(tmp_path / "net", replicas=1, peers=NAMES, contract_settings={})


def _start(ledger: LocalLedger, settings: SwarmSettings,
           only: dict[str, SwarmSettings]) -> list[SwarmPeer]:  # fmt: skip
    peers = []
    for name in NAMES:
        network = NetworkConfig(ledger=tuple(ledger.endpoints),
                                identity=ledger.identity_dir(name),
                                admin_identity=ledger.identity_dir("admin"))  # fmt: skip
        mine = only.get(name, replace(settings, lead=False) if name == "p3" else settings)
        peer = SwarmPeer(mine, network)
        peer.register()
        peers.append(peer)
    return peers


@pytest.fixture
def make_swarm(ledger4: LocalLedger) -> Iterator[Callable[..., list[SwarmPeer]]]:
    """Four peers with these settings (p3 never leads: its snapshot is always fetched), or
    with their own where `only` names them."""
    made: list[SwarmPeer] = []

    def make(settings: SwarmSettings, only: dict[str, SwarmSettings] | None = None,
             ) -> list[SwarmPeer]:  # fmt: skip
        made.extend(_start(ledger4, settings, only or {}))
        return made[-len(NAMES) :]

    yield make
    for peer in made:
        peer.close()


@pytest.fixture
def swarm(make_swarm: Callable[..., list[SwarmPeer]]) -> list[SwarmPeer]:
    return make_swarm(SETTINGS)


def _round(peers: list[SwarmPeer], params: list[dict[str, Any]]) -> list[RoundResult]:
    with ThreadPoolExecutor(len(peers)) as pool:
        return list(pool.map(lambda p, x: p.sync(x, weight=WEIGHTS[p.name]), peers, params))


def _record(peer: SwarmPeer, round: int) -> dict[str, Any]:
    history = peer.ledger.state(CONTRACT)["state"]["history"]
    return next(h for h in history if h["round"] == round)


def _spoil(peer: SwarmPeer, spoil: Callable[[bytes], bytes]) -> None:
    """From now on `peer` serves its local snapshots spoiled by `spoil`."""
    honest = peer.server.store.find

    def find(kind: str, round: int, digest: str) -> Snapshot | None:
        found = honest(kind, round, digest)
        if found is None or kind != "local":
            return found
        return Snapshot(kind, round, digest, spoil(bytes(found.data)), found._leaves)

    peer.server.store.find = find  # type: ignore[method-assign]


def _merged_round(peers: list[SwarmPeer], seeds: list[int],
                  change: Callable[[dict[str, Any]], None] | None = None,
                  ) -> tuple[list[RoundResult], dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """A round after the initial sync; returns the results, its record and the inputs."""
    _round(peers, [_params(s) for s in (1, 2, 3, 4)])  # the initial sync
    for peer in peers:
        peer.received_before = peer.fetcher.received.total  # type: ignore[attr-defined]
    inputs = [_params(s) for s in seeds]
    if change is not None:
        change(inputs[2])  # p3's
    results = _round(peers, inputs)
    assert len({r.digest for r in results}) == 1 and results[0].digest is not None
    return results, _record(peers[0], results[0].round), inputs


def _expected(record: dict[str, Any], inputs: list[dict[str, Any]], left_out: set[str],
              method: str = "mean", **options: Any) -> Any:  # fmt: skip
    """The whole-set merge of the same snapshots, in ranking order."""
    by_name = dict(zip(NAMES, inputs, strict=True))
    order = [n for n in record["ranking"] if n not in left_out]
    return merge([by_name[n] for n in order], [WEIGHTS[n] for n in order], method, **options)


def _assert_identical(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype
        assert np.array_equal(got[key], value), key


def test_the_streaming_mean_equals_the_whole_set_mean_bit_for_bit(swarm) -> None:
    results, record, inputs = _merged_round(swarm, [11, 12, 13, 14])
    assert record["status"] == "merged" and not record["excluded"]
    assert {n: record["inputs"][n]["weight"] for n in NAMES} == WEIGHTS
    for name, peer in zip(NAMES, swarm, strict=True):  # every site announced its chunk root
        assert record["inputs"][name]["root"] == chunk_root(
            peer.transport.pack(inputs[NAMES.index(name)])
        )
    _assert_identical(results[0].params, _expected(record, inputs, set()))


def test_a_chunk_spoiled_midway_leaves_its_site_out_and_the_rest_untouched(swarm) -> None:
    def flip(data: bytes) -> bytes:
        spoiled = bytearray(data)
        spoiled[2 * CHUNK_BYTES + 17] ^= 0x40  # inside the third chunk
        return bytes(spoiled)

    _spoil(swarm[2], flip)
    results, record, inputs = _merged_round(swarm, [21, 22, 23, 24])
    assert [e["name"] for e in record["excluded"]] == ["p3"]
    assert "chunk 2 " in record["excluded"][0]["reason"]
    assert "does not match its digest" in record["excluded"][0]["reason"]
    _assert_identical(results[0].params, _expected(record, inputs, {"p3"}))
    # caught at the third chunk: the leader read p3's chunk digests and three chunks, no more
    leader = next(p for p in swarm if p.name == record["leader"])
    read = leader.fetcher.received.total - leader.received_before
    leaves = chunk_count(record["inputs"]["p3"]["size"]) * LEAF_BYTES
    others = [n for n in NAMES if n not in (leader.name, "p3")]
    whole = sum(record["inputs"][n]["size"] + leaves for n in others)
    assert read == whole + leaves + 3 * CHUNK_BYTES


def test_nan_midway_leaves_its_site_out_and_the_rest_untouched(swarm) -> None:
    def poison(params: dict[str, Any]) -> None:
        params["last"][500] = np.nan  # in the snapshot's last chunk

    results, record, inputs = _merged_round(swarm, [31, 32, 33, 34], poison)
    assert record["excluded"] == [
        {"name": "p3", "reason": "tensor 'last' contains NaN or infinity"}
    ]
    _assert_identical(results[0].params, _expected(record, inputs, {"p3"}))


@pytest.mark.parametrize("how", ["longer", "shorter"])
def test_a_snapshot_of_another_size_midway_leaves_its_site_out(swarm, how: str) -> None:
    def resize(data: bytes) -> bytes:
        return data + b"\0" * CHUNK_BYTES if how == "longer" else data[: 3 * CHUNK_BYTES]

    _spoil(swarm[2], resize)
    results, record, inputs = _merged_round(swarm, [41, 42, 43, 44])
    assert [e["name"] for e in record["excluded"]] == ["p3"]
    reason = record["excluded"][0]["reason"]
    assert ("more than the" in reason) if how == "longer" else ("the ledger recorded" in reason)
    _assert_identical(results[0].params, _expected(record, inputs, {"p3"}))


# --- layer by layer: the methods that need every snapshot at once -----------------------


@pytest.mark.parametrize(
    ("method", "options", "compression"),
    [("geomedian", {}, "none"), ("trimmed_mean", {"beta": 0.25}, "int8+zstd")],
)
def test_layer_by_layer_merges_equal_the_whole_set_merge(make_swarm, monkeypatch, method,
                                                         options, compression) -> None:  # fmt: skip
    # p1 leads, holding one layer of each snapshot at a time; its auditor holds them all in
    # memory: both must find the same bits
    layered = replace(SETTINGS, merge_method=method, merge_options=options, merge_memory="layer",
                      audit=1, compression=compression)  # fmt: skip
    in_memory = replace(layered, merge_memory="model", lead=False)
    peers = make_swarm(layered, dict.fromkeys(NAMES[1:], in_memory))
    calls = []
    monkeypatch.setattr(leader_module, "merge_layered",
                        lambda *args: calls.append(args[3]) or merge_layered(*args))  # fmt: skip

    def poison(params: dict[str, Any]) -> None:
        params["last"][500] = np.inf

    results, record, inputs = _merged_round(peers, [51, 52, 53, 54], poison)
    assert record["excluded"] == [
        {"name": "p3", "reason": "tensor 'last' contains NaN or infinity"}
    ]
    assert record["leader"] == "p1" and calls == [method]
    assert record["audit"] is not None and record["audit"]["attestations"], record["audit"]
    transport = Transport.parse(compression)  # the models as they travel
    shape = structure(inputs[0])
    travelled = [transport.unpack(transport.pack(x), shape) for x in inputs]
    merged = _expected(record, travelled, {"p3"}, method, **options)
    _assert_identical(results[0].params, transport.unpack(transport.pack(merged), shape))


def test_a_snapshot_in_another_tensor_order_is_left_out(swarm) -> None:
    def reorder(params: dict[str, Any]) -> None:
        small = params.pop("small")  # the same tensors, "steps" now before "small" (and
        params["small"] = small  # the same encoded size: only the order gives it away)
        params["last"] = params.pop("last")

    results, record, inputs = _merged_round(swarm, [61, 62, 63, 64], reorder)
    assert record["excluded"] == [
        {"name": "p3", "reason": "tensors come in another order than this site's model's"}
    ]
    _assert_identical(results[0].params, _expected(record, inputs, {"p3"}))


def test_a_mean_that_overflows_float32_is_summed_again_in_float64(make_swarm) -> None:
    # w·x of values near the float32 limit overflows: the leader pulls the snapshots again
    # and sums "small" in float64, and its auditor, doing the same, finds the same bits
    # (four 16 MiB snapshots pulled twice by leader and auditor: on a loaded machine that
    # takes longer than the usual timeout's share, which only bounds a stalled round)
    peers = make_swarm(replace(SETTINGS, audit=1, leader_timeout_s=60.0))
    _round(peers, [_params(s) for s in (1, 2, 3, 4)])
    before = {p.name: p.fetcher.received.total for p in peers}
    inputs = [_params(s) for s in (71, 72, 73, 74)]
    for seed, params in enumerate(inputs):
        params["small"][:] = np.random.default_rng(seed).uniform(1e38, 3e38, (10, 10))
    results = _round(peers, inputs)
    assert len({r.digest for r in results}) == 1 and results[0].digest is not None
    record = _record(peers[0], results[0].round)
    assert record["status"] == "merged" and not record["excluded"]
    assert record["audit"]["attestations"] and not record["audit"]["abstained"]
    _assert_identical(results[0].params, _expected(record, inputs, set()))
    leader = next(p for p in peers if p.name == record["leader"])
    pulled = sum(record["inputs"][n]["size"] for n in NAMES if n != leader.name)
    assert leader.fetcher.received.total - before[leader.name] > 2 * pulled  # twice each


def test_mirrors_are_keyed_by_site_and_root() -> None:
    entry = {"digest": "a" * 64, "root": "b" * 64}
    assert mirror_key("p1", entry) != mirror_key("p2", entry)  # one digest, two sites
    assert mirror_key("p1", entry) != mirror_key("p1", {**entry, "root": "c" * 64})
    assert mirror_key("p1", {"digest": "a" * 64}) != mirror_key("p1", entry)
