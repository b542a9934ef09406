"""Secure aggregation in one process: real peers (threads) on a real ledger replica, with
what the leader receives recorded by its fetcher. The merger sees uniform noise from each
site, yet merges the weighted mean; clipped updates, dropped sites and too few shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pytest

from openswarm.codec import decode, digest_encoded
from openswarm.ledger.local import LocalLedger
from openswarm.node.exchange import ExchangeClient, ExchangeError
from openswarm.node.peer import RoundResult, SwarmPeer
from openswarm.node.secure import MASKED_TENSOR
from openswarm.node.settings import NetworkConfig, SwarmSettings
from openswarm.secagg import encode as fixed_encode
from openswarm.secagg import max_error

CONTRACT = "masked"
BOUND = 0.5
SETTINGS = SwarmSettings(contract=CONTRACT, min_peers=3, leader_timeout_s=6.0,
                         extra_window_s=0.5, ledger_retry_s=20.0,
                         secure_aggregation={"threshold": 2, "bound": BOUND})  # fmt: skip
SIZE = 20_000  # enough elements for a chi-square test of 256 bins
#: chi-square critical value, 255 degrees of freedom, p = 1e-6
CHI2_CRITICAL = 377.078


class RecordingFetcher(ExchangeClient):
    """Keeps every masked update this site pulls as leader: what the merger receives."""

    def __init__(self, identity: Any) -> None:
        super().__init__(identity)
        self.masked: dict[tuple[int, str], np.ndarray] = {}

    def fetch(self, endpoint: str, kind: str, round: int, digest: str, **options: Any) -> Any:
        data = super().fetch(endpoint, kind, round, digest, **options)
        if kind == "masked" and options.get("chunks") is None:  # (a shard owner's: a part)
            values = decode(bytes(data))[MASKED_TENSOR]
            self.masked[(round, options["peer"])] = values.view(np.uint64).copy()
        return data


class Withholding(SwarmPeer):
    """Takes part, but never reveals its shares (as if it died after masking)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._masked.reveal = lambda state, round: None  # type: ignore[method-assign]


class NeverMasks(SwarmPeer):
    """Sealed into a round, then posts no masked update (it dropped before masking)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._masked.mask = lambda *args: None  # type: ignore[method-assign]


class BogusShares(SwarmPeer):
    """Reveals random shares instead of the ones dealt to it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        honest = self._masked.secure.reveal

        def bogus(state: Any, round: int) -> dict[str, str]:
            rng = np.random.default_rng(round)
            return {n: rng.bytes(68).hex() for n in honest(state, round)}

        self._masked.secure.reveal = bogus  # type: ignore[method-assign]


class BadDealer(SwarmPeer):
    """Deals shares that open to nothing (sealed garbage of the right length)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        honest = self._masked.secure.ready_part

        def spoiled(state: Any, round: int) -> dict[str, Any] | None:
            part = honest(state, round)
            if part is not None:
                part["shares"] = {n: "ab" * (len(v) // 2) for n, v in part["shares"].items()}
            return part

        self._masked.secure.ready_part = spoiled  # type: ignore[method-assign]


class Snooper(SwarmPeer):
    """As leader, first tries to fetch the others' plaintext snapshots of the round."""

    attempts: ClassVar[list[str]] = []  # what each try of the round's leader got

    def _lead(self, view: dict[str, Any], local: Any) -> None:
        current = view["current"]
        for name in current["participants"]:
            if name == self.name:
                continue
            try:
                self.fetcher.fetch(view["members"][name]["endpoint"], "local", local.round,
                                   current["ready"][name]["digest"], max_bytes=2**27,
                                   peer=name, deadline_s=5.0)  # fmt: skip
                self.attempts.append("fetched")
            except ExchangeError as exc:
                self.attempts.append(str(exc))
        super()._lead(view, local)


class OutOfRange(SwarmPeer):
    """Adds 2^50 (far past any bound) to the first element of its masked update."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        honest = self._masked.secure.masked

        def pushed(*args: Any) -> np.ndarray:
            total = honest(*args)
            total[0] += np.uint64(2**50)
            return total

        self._masked.secure.masked = pushed  # type: ignore[method-assign]


class SteeringLeader(SwarmPeer):
    """As leader of a masked round, publishes the honest merge moved by 10 everywhere."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        honest = self._masked.lead

        def steered(state: Any, round: int, reference: Any, revealed: Any) -> Any:
            merged = honest(state, round, reference, revealed)
            if merged is None:
                return None
            params = self.transport.unpack(merged.data, reference)
            params = {k: (v + 10).astype(v.dtype) for k, v in params.items()}
            data = self.transport.pack(params)
            return replace(merged, data=data, digest=digest_encoded(data))

        self._masked.lead = steered  # type: ignore[method-assign]


@pytest.fixture
def make_peer(ledger1: LocalLedger) -> Iterator[Callable[..., SwarmPeer]]:
    made: list[SwarmPeer] = []

    def make(name: str, kind: type[SwarmPeer] = SwarmPeer,
             settings: SwarmSettings = SETTINGS) -> SwarmPeer:  # fmt: skip
        network = NetworkConfig(ledger=tuple(ledger1.endpoints),
                                identity=ledger1.identity_dir(name),
                                admin_identity=ledger1.identity_dir("admin"))  # fmt: skip
        peer = kind(settings, network, fetcher=None)
        peer.fetcher = peer._leader.fetcher = peer._masked.f.fetcher = RecordingFetcher(
            peer.identity
        )
        peer.register()
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


def _start() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal(SIZE).astype(np.float32),
            "b": np.zeros(3, np.float32)}  # fmt: skip


def _moved(start: dict[str, np.ndarray], seed: int, scale: float = 0.1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + scale * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in start.items()}  # fmt: skip


def _round(peers: list[SwarmPeer], params: list[dict[str, np.ndarray]],
           weights: list[float] | None = None) -> list[RoundResult]:  # fmt: skip
    weights = weights or [1.0] * len(peers)
    with ThreadPoolExecutor(len(peers)) as pool:
        return list(pool.map(lambda p, x, w: p.sync(x, weight=w), peers, params, weights))


def _history(peer: SwarmPeer) -> list[dict[str, Any]]:
    return peer.ledger.state(CONTRACT)["state"]["history"]


def _chi2_bytes(values: np.ndarray, byte: int) -> float:
    """Chi-square statistic of one byte of each element over 256 equal bins."""
    picked = (values >> np.uint64(8 * byte)) & np.uint64(0xFF)
    counts = np.bincount(picked.astype(np.int64), minlength=256)
    expected = len(values) / 256
    return float(((counts - expected) ** 2 / expected).sum())


def _weighted_mean(start: dict[str, np.ndarray], sites: list[dict[str, np.ndarray]],
                   weights: list[float]) -> dict[str, np.ndarray]:  # fmt: skip
    total = sum(weights)
    return {k: start[k].astype(np.float64) + sum(
        w / total * np.clip(s[k].astype(np.float64) - start[k], -BOUND, BOUND)
        for s, w in zip(sites, weights, strict=True)) for k in start}  # fmt: skip


def _sync_start(peers: list[SwarmPeer]) -> dict[str, np.ndarray]:
    """The first round hands out one site's model: every site starts from it."""
    first = _round(peers, [_start()] * len(peers))
    assert first[0].params is not None and len({r.digest for r in first}) == 1
    return {k: np.asarray(v) for k, v in first[0].params.items()}


def test_the_merger_receives_noise_and_merges_the_weighted_mean(make_peer) -> None:
    peers = [make_peer(n) for n in ("p1", "p2", "p3")]
    start = _sync_start(peers)
    sites = [_moved(start, seed) for seed in (1, 2, 3)]
    sites[2]["w"][:10] += 40.0  # far out of range: clipped to ±BOUND, not trusted
    weights = [1.0, 2.0, 3.0]
    results = _round(peers, sites, weights)
    assert len({r.digest for r in results}) == 1 and results[0].params is not None
    record = _history(peers[0])[-1]
    assert record["status"] == "merged" and record["secagg"]["survivors"] == ["p1", "p2", "p3"]
    expected = _weighted_mean(start, sites, weights)
    merged = results[0].params
    for name, want in expected.items():
        # fixed-point error of three terms, then the float32 of the merged model
        tolerance = max_error(3) + np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
        assert np.all(np.abs(np.asarray(merged[name], np.float64) - want) <= tolerance), name
    # the clipped coordinates moved by at most their site's share of the bound
    moved = np.asarray(merged["w"][:10], np.float64) - start["w"][:10]
    assert np.all(np.abs(moved) <= BOUND + 1e-6)
    # what the leader pulled from each other site: uniform in every byte looked at
    leader = next(p for p in peers if p.name == record["leader"])
    received = {who: v for (r, who), v in leader.fetcher.masked.items() if r == record["round"]}
    assert set(received) == {"p1", "p2", "p3"} - {leader.name}
    for who, values in received.items():
        for byte in (0, 3, 7):
            assert _chi2_bytes(values, byte) < CHI2_CRITICAL, (who, byte)
        # the same test tells an unmasked update apart: it can fail
        index = ["p1", "p2", "p3"].index(who)
        plain = fixed_encode(sites[index]["w"].astype(np.float64) - start["w"], BOUND)
        assert _chi2_bytes(plain, 7) > CHI2_CRITICAL


def test_a_site_that_withholds_its_shares_is_recovered_from_the_others(make_peer) -> None:
    peers = [make_peer("p1"), make_peer("p2"), make_peer("p3", Withholding)]
    start = _sync_start(peers)
    sites = [_moved(start, seed) for seed in (4, 5, 6)]
    results = _round(peers, sites)
    record = _history(peers[0])[-1]
    assert record["status"] == "merged", record
    assert record["secagg"]["unmasked_by"] == ["p1", "p2"]  # threshold 2: enough
    assert record["secagg"]["survivors"] == ["p1", "p2", "p3"]
    expected = _weighted_mean(start, sites, [1.0, 1.0, 1.0])
    assert np.allclose(results[0].params["w"], expected["w"], atol=1e-6)


@pytest.mark.parametrize("topology", ["leader", "sharded"])
def test_a_site_dropped_before_masking_is_left_out_and_its_masks_removed(
    make_peer, topology: str
) -> None:
    settings = replace(SETTINGS, merge_topology=topology, leader_timeout_s=4.0)
    peers = [make_peer("p1", settings=settings), make_peer("p2", settings=settings),
             make_peer("p3", NeverMasks, settings=settings)]  # fmt: skip
    start = _sync_start(peers)
    sites = [_moved(start, seed) for seed in (7, 8, 9)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda p, x: p.sync(x), peers, sites))
    record = _history(peers[0])[-1]
    assert record["status"] == "merged", record
    assert record["secagg"]["survivors"] == ["p1", "p2"]
    assert [e["name"] for e in record["excluded"]] == ["p3"]
    assert bool(record["shards"]) == (topology == "sharded")
    # the two survivors' mean, their pair masks with p3 removed via p3's rebuilt key
    expected = _weighted_mean(start, sites[:2], [1.0, 1.0])
    merged = next(r.params for r in results if r.params is not None)
    assert np.allclose(merged["w"], expected["w"], atol=1e-6)


def test_bogus_shares_of_one_site_do_not_spoil_the_merge(make_peer) -> None:
    peers = [make_peer("p1"), make_peer("p2"), make_peer("p3", BogusShares)]
    start = _sync_start(peers)
    sites = [_moved(start, seed) for seed in (10, 11, 12)]
    results = _round(peers, sites)
    record = _history(peers[0])[-1]
    assert record["status"] == "merged", record
    expected = _weighted_mean(start, sites, [1.0, 1.0, 1.0])
    assert np.allclose(results[0].params["w"], expected["w"], atol=1e-6)


def test_too_few_shares_abort_the_round_and_the_next_one_runs(make_peer) -> None:
    strict = replace(SETTINGS, secure_aggregation={"threshold": 3, "bound": BOUND})
    withholding = make_peer("p3", Withholding, strict)
    peers = [make_peer("p1", settings=strict), make_peer("p2", settings=strict), withholding]
    start = _sync_start(peers)
    _round(peers, [_moved(start, seed) for seed in (13, 14, 15)])
    record = _history(peers[0])[-1]
    assert record["status"] == "aborted", record
    assert record["secagg"]["unmasked_by"] == ["p1", "p2"]
    # the withholding site reveals again (it was only this round): the next round merges
    del withholding._masked.reveal
    sites = [_moved(start, seed) for seed in (16, 17, 18)]
    results = _round(peers, sites)
    assert _history(peers[0])[-1]["status"] == "merged"
    assert len({r.digest for r in results}) == 1 and results[0].params is not None


def test_the_first_round_is_not_masked_and_peers_without_the_setting_follow_the_contract(
    make_peer,
) -> None:
    plain = replace(SETTINGS, secure_aggregation=None)
    peers = [make_peer("p1"), make_peer("p2", settings=plain), make_peer("p3", settings=plain)]
    start = _sync_start(peers)
    assert _history(peers[0])[0]["secagg"] is None  # the initial sync hands a model out
    results = _round(peers, [_moved(start, seed) for seed in (19, 20, 21)])
    assert _history(peers[0])[-1]["secagg"]["survivors"] == ["p1", "p2", "p3"]
    assert len({r.digest for r in results}) == 1


def test_a_dealer_whose_shares_open_to_nothing_gets_the_round_ended_by_its_leader(
    make_peer,
) -> None:
    peers = [make_peer("p1"), make_peer("p2"), make_peer("p3", BadDealer)]
    start = _sync_start(peers)
    results = _round(peers, [_moved(start, seed) for seed in (22, 23, 24)])
    record = _history(peers[0])[-1]
    # nobody can remove its self-mask: the leader ends the round (no timeouts, no merge)
    assert record["status"] == "aborted" and record["failed_leaders"] == [], record
    assert record["secagg"]["unmasked_by"] == ["p1", "p2", "p3"]
    assert all(r.params is None for r in results)


def test_sharded_masked_rounds_merge_the_weighted_mean(make_peer) -> None:
    sharded = replace(SETTINGS, merge_topology="sharded")
    peers = [make_peer(n, settings=sharded) for n in ("p1", "p2", "p3")]
    rng = np.random.default_rng(1)
    big = {"w": rng.standard_normal(700_000).astype(np.float32),  # three 1 MiB chunks
           "b": np.zeros(3, np.float32)}  # fmt: skip
    first = _round(peers, [big] * 3)
    start = {k: np.asarray(v) for k, v in first[0].params.items()}
    sites = [_moved(start, seed) for seed in (25, 26, 27)]
    sites[0]["w"][-5:] -= 9.0  # clipped, in the last shard
    weights = [3.0, 1.0, 2.0]
    results = _round(peers, sites, weights)
    record = _history(peers[0])[-1]
    assert record["status"] == "merged", record
    assert len({s["owner"] for s in record["shards"]}) == 3  # each site merged a part
    assert all(s["size"] > 0 for s in record["shards"])
    assert record["secagg"]["survivors"] == ["p1", "p2", "p3"]
    assert len({r.digest for r in results}) == 1
    expected = _weighted_mean(start, sites, weights)
    for name, want in expected.items():
        tolerance = max_error(3) + np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
        assert np.all(np.abs(np.asarray(results[0].params[name], np.float64) - want) <= tolerance)


def test_the_demo_refuses_secure_aggregation_with_a_merge_that_needs_each_model() -> None:
    from openswarm.demo.run_demo import DemoTraining
    from openswarm.protocol import SwarmError

    with pytest.raises(SwarmError, match=r"--secure-aggregation: .*'krum'"):
        DemoTraining(merge="krum", secure_aggregation=True).check(None, None)
    training = DemoTraining(secure_aggregation=True)
    training.check(None, "sharded")
    assert "--secure-aggregation" in training.script_args()


def test_a_leader_cannot_fetch_a_plaintext_snapshot_of_a_masked_round(make_peer) -> None:
    peers = [make_peer(n, Snooper) for n in ("p1", "p2", "p3")]
    start = _sync_start(peers)
    Snooper.attempts.clear()
    _round(peers, [_moved(start, seed) for seed in (31, 32, 33)])
    assert _history(peers[0])[-1]["status"] == "merged"
    assert len(Snooper.attempts) == 2, Snooper.attempts  # the leader's, of the two others
    assert all("securely aggregated" in a for a in Snooper.attempts), Snooper.attempts


def test_an_out_of_range_masked_update_ends_the_round_unmerged(make_peer) -> None:
    peers = [make_peer("p1"), make_peer("p2"), make_peer("p3", OutOfRange)]
    start = _sync_start(peers)
    results = _round(peers, [_moved(start, seed) for seed in (34, 35, 36)])
    record = _history(peers[0])[-1]
    # the sum decodes far beyond the bound: nobody can tell whose, nothing is merged
    assert record["status"] == "aborted" and record["failed_leaders"] == [], record
    assert all(r.params is None for r in results)


def test_a_leader_steering_a_masked_merge_beyond_the_bound_is_refused(make_peer) -> None:
    peers = [make_peer(n, SteeringLeader) for n in ("p1", "p2", "p3")]
    start = _sync_start(peers)
    results = _round(peers, [_moved(start, seed) for seed in (37, 38, 39)])
    record = _history(peers[0])[-1]
    followers = [r for p, r in zip(peers, results, strict=True) if p.name != record["leader"]]
    assert all(r.params is None for r in followers)  # neither loads it
    assert record["status"] == "voided:refused", record  # both refused it: it is void
