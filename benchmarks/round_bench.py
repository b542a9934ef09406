"""Sync-round benchmark: seconds per round for K peers and P float32 parameters on loopback.

Each cell (P, K) starts a real ledger replica (`LocalLedger`, one `openswarm ledger start`
process) and K peer processes (spawned workers of this file, identities b1..bK) that all
sync the default contract with `SwarmPeer.sync` over mutual-TLS gRPC on 127.0.0.1. Each
peer holds a dict of four float32 arrays summing to P values (random, different per peer)
and a preallocated torch copy of them; before each round it changes one value (as a step
of training would), so that no round's merged model is bit for bit an earlier one's, which a
peer still holding that one would take from its store (found by digest) instead of fetching.
After `sync` it loads the merged model into the torch tensors
(`tensor.copy_(torch.from_numpy(arr))`, the "load" phase). Before the rounds every
peer opens its exchange channel to every other (as earlier rounds of a training run would
have), then one warm-up round (the contract's initial sync: the leader hands out its own
model, no merge) is followed by `--rounds` measured rounds (default 3); a barrier starts
every round on all peers at once. A measured round in which the ledger records a peer left
out of the merge (or a leader timeout) is listed and not counted; column n says how many
rounds were.

Reported per cell, medians over the measured rounds:

- round: the max over peers of sync total + load (the round as the slowest peer sees it);
- floor: `np.copyto` of the K parameter sets (K * P * 4 bytes) into preallocated buffers,
  measured in the parent just before the cell's peers start; x floor = round / floor;
- the leader's view (the leader changes from round to round): encode (its snapshot plus the
  merged model), xfer (pulling the K-1 other snapshots, digest checks and decode included),
  merge (weighted mean), load, and ledger;
- the followers' view (median over followers): encode, xfer (fetching the merged model,
  digest check and decode included), load, and ledger;
- ledger = sync total minus the timed phases, as `SwarmPeer.sync` reports it: ledger
  transactions and polls, waiting on the other peers (for a follower: on the leader's whole
  gather/merge), and the untimed checks (decodes, finiteness); in brackets the part spent
  inside ledger RPCs (`submit` and `state`, timed by wrapping the peer's LedgerClient);
- rssGB: the peak of the K peer processes' summed RSS (sampled every 0.1 s), and load1:
  the 1-minute load average when the cell started (other work on the machine shows here);
- L.mem and F.mem: each peer's own peak RSS in a round (the kernel's VmHWM, reset before
  the round through /proc/self/clear_refs, so no peak is missed between samples) above its
  baseline, in copies of the model (P * 4 bytes): the most over the measured rounds of the
  leader, and of the followers. The baseline is the RSS a peer has once its parameters,
  its torch copy of them and its channels exist, before the first round; so everything
  the swarm holds for it (its snapshot, the merged model as bytes and decoded, buffers in
  flight) counts, nothing it inherited from an earlier round is hidden.

Memory: at P=50M a snapshot is 200 MB. The peers' snapshot stores keep 3 rounds of history
by default (`openswarm.node.exchange._KEEP_ROUNDS`), about 8 snapshots per peer over the
4 rounds, which at K=8 would need over 20 GB; the workers therefore keep only the current round
(`--keep-rounds 0`, safe here because the barrier means nobody fetches an older round).
That does not touch the timed path. Before each cell the expected peak is estimated and
compared with MemAvailable; cells that do not fit are skipped and listed with the reason,
and a cell is aborted if MemAvailable falls under 1.5 GB while it runs.

On a 2-core machine every phase is CPU-bound (TLS, sha256 digests, copies) and the K peer
processes share the cores, so the figures scale with the load average, printed per cell.

Run:
    .venv/bin/python benchmarks/round_bench.py --quick       # P in 1M,10M; K in 2,4
    .venv/bin/python benchmarks/round_bench.py               # P in 1M,10M,50M; K in 2,4,8
                                                             # (~6 min on 2 busy cores)
    .venv/bin/python benchmarks/round_bench.py --sizes 50M --peers 8 --rounds 3 \\
        [--keep-rounds N] [--mem-fraction 0.8] [--json PATH]
    .venv/bin/python benchmarks/round_bench.py --sizes 1M,10M --peers 4 --audit 0,1,3
    .venv/bin/python benchmarks/round_bench.py --sizes 10M --peers 4 \\
        --compression none,zstd,float16,int8+zstd

`--link-mbit N` (root, iproute2 and tc) runs every peer in its own network namespace behind
its own N Mbit/s link each way (benchmarks/links.py: a NetnsLab of tests/netns.py, a tc token
bucket on both ends of each host's veth), the ledger on an unshaped host of its own; then
the parent does not reach the ledger, so peer b1 reports the rounds' history:
    .venv/bin/python benchmarks/round_bench.py --sizes 10M,50M --peers 4,8 --link-mbit 1000

`--compression` likewise runs each cell once per mode (the contract's `compression`), and
`--method` once per merge method; `--merge-memory layer` has every peer merge layer by layer
(the methods but mean keep snapshots in temporary files, see openswarm.merge.layered):
    .venv/bin/python benchmarks/round_bench.py --sizes 10M --peers 4 --method geomedian \\
        --merge-memory model,layer [--layers 16]
`--topology leader,sharded` runs each cell once per merge topology (the contract's
`merge_topology`); columns in and out say how much the busiest peer pulled and served in a
round, in model sizes (the sharded target: 2(K-1)/K each way):
    .venv/bin/python benchmarks/round_bench.py --sizes 50M --peers 8 --link-mbit 1000 \
        --topology leader,sharded
`--audit` runs each cell once per auditor count (the contract's `audit`); column aud says
which, and MB how many megabytes all peers pulled from each other in a round, as they went
over the wire (snapshots for the leader and the auditors, the merged model for the rest):
the cost of audits, or the saving of a compression, is the difference between rows.

`--secure-aggregation off,on` likewise runs each cell once without and once with masked
rounds; column sa says which. "on" creates the contract with secure_aggregation
{"threshold": 2, "bound": 1.0} (min_peers is K, so the threshold fits every K >= 2; it needs
merge method mean and audit 0, the defaults here). The warm-up round is the contract's
initial sync, which is never masked (there is no merged model to take an update from
yet); every measured round is a masked one: each peer posts its update
(its model minus the previous merged one, clipped to +-bound) in Z_2^64, 8 bytes a
parameter (twice a float32 model), the leader pulls the K-1 others, fixes the survivors on
the ledger, every peer reveals its Shamir shares, and the leader unmasks the sum and
publishes the merged model, which the followers fetch as usual. The cell checks on the
ledger that the warm-up round was not masked and counts a measured round only if its
history's `secagg` names all K peers as survivors (a round with fewer, or not masked at
all, is listed as not counted, like a round that left a peer out). The columns then read
(leader topology):
- L.merge is the leader's whole masked merge: waiting until every participant posted its
  masked update, pulling and decoding the K-1 others, posting the survivors, waiting for
  the shares, unmasking, and rebuilding and encoding the merged model (L.xfer is empty:
  the pulls are inside merge);
- masking is done by every peer, the leader included, after the seal (SwarmPeer._follow's
  step "mask"), outside any timed phase: it counts in L.ledger and F.ledger, as do the
  revealed shares; a follower's ledger also holds the wait for the leader's merge;
- F.xfer is fetching the merged model (float32, as without masking);
- MB counts what went over the wire between peers, so the masked updates the leader
  pulled (the K-1 others' 8-byte parameters) and the merged model the followers fetched;
  the shares travel in ledger transactions (a few hundred bytes a pair of peers) and are
  not counted.
A masked round's update needs the previous merged model, which a peer's store must still
hold when the next round starts, so masked cells keep at least one old round (column-less;
`keep_rounds` in the JSON) whatever --keep-rounds says; that touches memory only.
    .venv/bin/python benchmarks/round_bench.py --sizes 1M,10M --peers 4,8 \\
        --secure-aggregation off,on --rounds 3 --json /tmp/secagg_bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Barrier as MpBarrier
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.local import LocalLedger

GB = 1e9
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MIN_AVAILABLE_BYTES = 1_500_000_000  # abort a cell below this much free memory
PROCESS_BYTES = 300_000_000  # a peer process's own footprint (Python, torch, gRPC)
ROUND_TIMEOUT_S = 600.0
#: --secure-aggregation on: the contract's setting (threshold <= min_peers = K)
SECURE_AGGREGATION = {"threshold": 2, "bound": 1.0}
START_TIMEOUT_S = 180.0
Message = dict[str, Any]


def parse_count(text: str) -> int:
    """'10M' -> 10_000_000; also K and G suffixes."""
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:].upper(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def label(count: int) -> str:
    for suffix, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= scale and count % scale == 0:
            return f"{count // scale}{suffix}"
    return str(count)


def tensor_sizes(count: int, layers: int = 0) -> list[int]:
    """Four tensors of P/2, P/4, P/8 and the rest: a few layers, like a small network; or
    `layers` tensors of (about) equal size."""
    if layers:
        return [count // layers + (i < count % layers) for i in range(layers)]
    sizes = [count // 2, count // 4, count // 8]
    return [*sizes, count - sum(sizes)]


def mem_available() -> int:
    """MemAvailable of /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def estimate_bytes(count: int, peers: int, keep_rounds: int, secure: bool = False) -> int:
    """Expected peak memory of one cell's peers (worst case, all peaks at once).

    Every peer: its process (Python, torch, gRPC). A follower: params + torch copy + the
    store's (local + merged) snapshots per kept round + a fetch's bytearray and decoded
    copy. The leader as well: its own decoded snapshot, the K-1 decoded others, up to
    min(K-1, 8) fetch buffers (bytearray + bytes) in flight, the merged model, its encoding
    and its decoded copy. Masked rounds (`secure`): every peer's masked update (8 bytes a
    parameter, two model sizes) in its store, and as it is computed (update, masks, its
    encoding: about 4 more); the leader as well the K-1 others' masked updates pulled and
    decoded (two model sizes each, twice) and the sum with its unmasking (4 more).
    """
    size = count * 4
    kept = keep_rounds + 1
    follower = (2 + 2 * kept + 2.2 + (6 if secure else 0)) * size
    leader = (2 + 2 * kept + 1 + (peers - 1) + 2.2 * min(peers - 1, 8) + 3) * size
    if secure:
        leader += (6 + 4 * (peers - 1) + 4) * size
    return int(leader + (peers - 1) * follower + peers * PROCESS_BYTES)


# --- the in-memory floor ---------------------------------------------------------------------


def copy_floor(count: int, peers: int, repeats: int = 5) -> float:
    """Median seconds to np.copyto K parameter sets into preallocated buffers (pages touched)."""
    sizes = tensor_sizes(count)
    sources = [[np.full(n, i + 1, dtype=np.float32) for n in sizes] for i in range(peers)]
    targets = [[np.empty(n, dtype=np.float32) for n in sizes] for _ in range(peers)]
    times = []
    for rep in range(repeats + 1):
        start = time.perf_counter()
        for source, target in zip(sources, targets, strict=True):
            for src, dst in zip(source, target, strict=True):
                np.copyto(dst, src)
        if rep:  # the first pass touches the targets' pages
            times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- the peer worker (a spawned process) -----------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    index: int
    peers: int
    count: int
    rounds: int
    endpoints: tuple[str, ...]
    identity: str
    keep_rounds: int
    audit: int = 0
    compression: str = "none"
    method: str = "mean"
    memory: str = "model"
    layers: int = 0
    topology: str = "leader"
    secure: bool = False  # the contract's secure_aggregation (SECURE_AGGREGATION)
    netns: str = ""  # with --link-mbit: the host (network namespace) this peer runs in
    listen: str = "127.0.0.1:0"


class RpcTimer:
    """Seconds spent inside wrapped calls."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed


def bench_settings(peers: int, audit: int = 0, compression: str = "none", method: str = "mean",
                   memory: str = "model", topology: str = "leader",
                   secure: bool = False) -> Any:  # fmt: skip
    """The swarm settings of every benchmark peer (and so of the contract); `secure`: masked
    rounds (SECURE_AGGREGATION; min_peers is K >= 2, so the threshold 2 fits)."""
    from openswarm.node.settings import SwarmSettings

    return SwarmSettings(min_peers=peers, extra_window_s=0.0, leader_timeout_s=600.0,
                         audit=audit or None, compression=compression, merge_method=method,
                         merge_memory=memory, merge_topology=topology,
                         secure_aggregation=dict(SECURE_AGGREGATION) if secure else None,
                         )  # fmt: skip


def connect_all(peer: Any, timeout_s: float = 120.0) -> None:
    """Open this peer's exchange channel to every other member, as rounds before would have.

    Asks each for a merged model that does not exist (which any member may ask for); a
    NOT_FOUND answer means the mutual-TLS channel is up, so the measured rounds do not pay
    (or fail on) first connections.
    """
    from openswarm.node.exchange import ExchangeError

    for other, member in sorted(peer.view()["members"].items()):
        if other == peer.name:
            continue
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                peer.fetcher.fetch(
                    member["endpoint"], "merged", 1 << 40, "0" * 64, max_bytes=1, peer=other
                )
            except ExchangeError as exc:
                if "NOT_FOUND" in str(exc):
                    break
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def load_into(model: dict[str, Any], params: dict[str, Any]) -> None:
    """Copy merged parameters into the torch tensors."""
    import torch

    for key, value in params.items():
        model[key].copy_(torch.from_numpy(value))


def peer_worker(cfg: WorkerConfig, queue: MpQueue[Message], barrier: MpBarrier) -> None:
    """One peer: register, then sync `1 + rounds` times, loading each merged model."""
    name = f"b{cfg.index + 1}"
    try:
        if cfg.netns:  # first, while this process has one thread
            from links import enter_host

            enter_host(cfg.netns)
        import torch

        import openswarm.node.exchange as exchange
        from openswarm.node.peer import SwarmPeer
        from openswarm.node.settings import NetworkConfig

        torch.set_num_threads(1)
        exchange._KEEP_ROUNDS = cfg.keep_rounds  # memory only; see the module docstring
        rng = np.random.default_rng(1000 + cfg.index)
        params = {
            f"layer{i}.weight": rng.random(n, dtype=np.float32) - np.float32(0.5)
            for i, n in enumerate(tensor_sizes(cfg.count, cfg.layers))
        }
        model = {key: torch.from_numpy(value.copy()) for key, value in params.items()}
        settings = bench_settings(cfg.peers, cfg.audit, cfg.compression, cfg.method, cfg.memory,
                                  cfg.topology, cfg.secure)  # fmt: skip
        network = NetworkConfig(ledger=cfg.endpoints, identity=Path(cfg.identity),
                                listen=cfg.listen)  # fmt: skip
        peer = SwarmPeer(settings, network)
        rpc = RpcTimer()
        for method in ("call",):  # every ledger RPC goes through call()
            setattr(peer.ledger, method, rpc.wrap(getattr(peer.ledger, method)))
        received = peer.fetcher.received  # bytes on the wire this peer pulled from others
        sent = peer.server.sent  # and served to them
        peer.register()
        queue.put({"kind": "registered", "peer": name})
        barrier.wait(ROUND_TIMEOUT_S)  # all registered: every endpoint is on the ledger
        connect_all(peer)
        queue.put({"kind": "connected", "peer": name})
        baseline = own_memory("VmRSS")
        first = next(iter(params.values()))
        for round_index in range(cfg.rounds + 1):
            # a step of training changes the model: no merged model equals an earlier one
            # (one that did would be taken from the store, by its digest, not fetched)
            first[0] = np.float32(0.001 * (round_index + 1))
            barrier.wait(ROUND_TIMEOUT_S)
            rpc.seconds = 0.0
            before, before_sent = received.total, sent.total
            reset_peak()
            result = peer.sync(params)
            if result.params is None:
                raise RuntimeError(f"round {result.round} ended without a merged model")
            start = time.perf_counter()
            load_into(model, result.params)  # (no tensor of it outlives the round here)
            load = time.perf_counter() - start
            queue.put({
                "kind": "round", "peer": name, "index": round_index, "round": result.round,
                "leader": result.leader, "timings": {**result.timings, "load": load},
                "rpc": rpc.seconds, "fetched": received.total - before,
                "sent": sent.total - before_sent,
                "peak_copies": (own_memory("VmHWM") - baseline) / (cfg.count * 4),
            })  # fmt: skip
            del result
        barrier.wait(ROUND_TIMEOUT_S)  # everyone has the last merged model: stop serving
        # the rounds as the ledger recorded them (the parent may not reach the ledger's host)
        history = peer.ledger.state(DEFAULT_CONTRACT)["state"]["history"] if cfg.index == 0 else []
        peer.close()
        queue.put({"kind": "done", "peer": name, "history": history})
    except BaseException:
        queue.put({"kind": "error", "peer": name, "error": traceback.format_exc()})
        barrier.abort()


# --- the parent ------------------------------------------------------------------------------


class CellError(RuntimeError):
    pass


@dataclass
class Cell:
    count: int
    peers: int
    audit: int = 0
    compression: str = "none"
    method: str = "mean"
    memory: str = "model"
    topology: str = "leader"
    secure: bool = False  # masked rounds (the contract's secure_aggregation)
    keep_rounds: int = 0  # old rounds the peers' stores kept (masked rounds: at least 1)
    fetched_mb: float = 0.0  # MB all peers pulled in a round (median over rounds)
    most_in: float = 0.0  # the most any one peer pulled in a round, in model sizes (median)
    most_out: float = 0.0  # the most any one peer served in a round, in model sizes
    leader_copies: float = 0.0  # the leader's peak RSS above its baseline, in model copies
    follower_copies: float = 0.0  # the same for the followers (the most of any)
    floor_s: float = 0.0
    round_s: float = 0.0
    wall_s: float = 0.0
    leader: dict[str, float] = field(default_factory=dict)
    follower: dict[str, float] = field(default_factory=dict)
    leaders: list[str] = field(default_factory=list)
    # per measured round counted: its number, and the bytes each peer pulled and served
    traffic: list[dict[str, Any]] = field(default_factory=list)
    # per measured round counted: its history's secagg on the ledger (survivors, unmasked_by)
    secagg: list[Any] = field(default_factory=list)
    rounds_used: int = 0
    left_out: list[str] = field(default_factory=list)
    rss_peak_gb: float = 0.0
    estimate_gb: float = 0.0
    load1: float = 0.0
    load1_end: float = 0.0
    seconds: float = 0.0
    skipped: str | None = None


def own_memory(field: str) -> int:
    """This process's `field` (VmRSS, VmHWM) of /proc/self/status, in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Restart this process's VmHWM from its current RSS."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


class Collector:
    """Reads the workers' messages; meanwhile samples the peers' summed RSS and aborts the
    cell if the machine runs low on memory (other people's processes live there too)."""

    def __init__(self, queue: MpQueue[Message], procs: list[BaseProcess]) -> None:
        self.queue = queue
        self.procs = procs
        self.peak_rss = 0

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, sum(rss_bytes(p.pid or 0) for p in self.procs))
        available = mem_available()
        if available < MIN_AVAILABLE_BYTES:
            raise CellError(
                f"aborted: MemAvailable fell to {available / GB:.1f} GB with the peers holding "
                f"{self.peak_rss / GB:.1f} GB"
            )

    def take(self, kind: str, count: int, timeout_s: float) -> list[Message]:
        got: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            self.sample()
            if time.monotonic() > deadline:
                raise CellError(f"timed out waiting for {kind!r} ({len(got)}/{count})")
            try:
                message = self.queue.get(timeout=0.1)
            except Empty:
                dead = [p for p in self.procs if p.exitcode not in (None, 0)]
                if dead:
                    raise CellError(f"peer process exited with {dead[0].exitcode}") from None
                continue
            if message["kind"] == "error":
                raise CellError(f"{message['peer']} failed:\n{message['error']}")
            if message["kind"] != kind:
                raise CellError(f"expected {kind!r}, got {message['kind']!r}")
            got.append(message)
        return got


def summarize(cell: Cell, rounds: list[list[Message]]) -> None:
    """Medians over rounds of the leader's phases and the followers' median phases."""
    leader_rows: dict[str, list[float]] = {}
    follower_rows: dict[str, list[float]] = {}
    totals = []
    for messages in rounds:
        leader_name = messages[0]["leader"]
        cell.leaders.append(str(leader_name))
        cell.traffic.append({
            "round": messages[0]["round"],
            "fetched": {m["peer"]: m["fetched"] for m in messages},
            "sent": {m["peer"]: m["sent"] for m in messages},
        })  # fmt: skip
        totals.append(max(m["timings"]["total"] + m["timings"]["load"] for m in messages))
        followers: dict[str, list[float]] = {}
        for message in messages:
            phases = {**message["timings"], "rpc": message["rpc"]}
            if message["peer"] == leader_name:
                for key, value in phases.items():
                    leader_rows.setdefault(key, []).append(value)
            else:
                for key, value in phases.items():
                    followers.setdefault(key, []).append(value)
        for key, values in followers.items():
            follower_rows.setdefault(key, []).append(statistics.median(values))
    cell.round_s = statistics.median(totals)
    cell.leader_copies = max(
        m["peak_copies"] for ms in rounds for m in ms if m["peer"] == m["leader"]
    )
    cell.follower_copies = max(
        (m["peak_copies"] for ms in rounds for m in ms if m["peer"] != m["leader"]), default=0.0
    )
    cell.fetched_mb = statistics.median(sum(m["fetched"] for m in ms) / 1e6 for ms in rounds)
    model = cell.count * 4
    cell.most_in = statistics.median(max(m["fetched"] for m in ms) / model for ms in rounds)
    cell.most_out = statistics.median(max(m["sent"] for m in ms) / model for ms in rounds)
    cell.leader = {k: statistics.median(v) for k, v in leader_rows.items()}
    cell.follower = {k: statistics.median(v) for k, v in follower_rows.items()}


def run_cell(
    count: int,
    peers: int,
    rounds: int,
    keep_rounds: int,
    audit: int = 0,
    compression: str = "none",
    method: str = "mean",
    memory: str = "model",
    layers: int = 0,
    link_mbit: int = 0,
    topology: str = "leader",
    secure: bool = False,
) -> Cell:
    # a masked update is the model minus the previous merged one, which a peer's store must
    # still hold when the next round starts (it can no longer be fetched once every store
    # dropped it): keep one old round at least
    keep_rounds = max(keep_rounds, 1) if secure else keep_rounds
    cell = Cell(count, peers, audit=audit, compression=compression, method=method, memory=memory,
                topology=topology, secure=secure, keep_rounds=keep_rounds,
                load1=os.getloadavg()[0])  # fmt: skip
    started = time.perf_counter()
    cell.floor_s = copy_floor(count, peers)
    names = [f"b{i}" for i in range(1, peers + 1)]
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="round_bench_"))
        contract = bench_settings(peers, audit, compression, method, memory,
                                  topology, secure).contract_settings()  # fmt: skip
        hosts: list[Any] = []
        if link_mbit:  # the ledger on host 1, each peer behind its own link on the next
            from links import shaped_lab

            lab = stack.enter_context(shaped_lab(peers + 1, link_mbit))
            hosts = lab.hosts
        net = LocalLedger.create(
            Path(tmp) / "ledger", replicas=1, peers=names, contract_settings=contract,
            hosts=[hosts[0].address] if hosts else None,
        )  # fmt: skip
        if hosts:
            net.spawner = lambda replica, argv, **popen: lab.popen(hosts[0], argv, **popen)
        ctx = mp.get_context("spawn")
        queue: MpQueue[Message] = ctx.Queue()
        barrier = ctx.Barrier(peers + 1)
        procs: list[BaseProcess] = []
        try:
            net.start()
            if not hosts:  # else the peers wait for it (only they reach its host)
                net.wait_ready()
            for index in range(peers):
                cfg = WorkerConfig(
                    index, peers, count, rounds, tuple(net.endpoints),
                    str(net.pki_dir / "identities" / names[index]), keep_rounds, audit,
                    compression, method, memory, layers, topology, secure,
                    hosts[index + 1].netns if hosts else "",
                    f"{hosts[index + 1].address}:0" if hosts else "127.0.0.1:0",
                )  # fmt: skip
                proc = ctx.Process(target=peer_worker, args=(cfg, queue, barrier), daemon=True)
                proc.start()
                procs.append(proc)
            collector = Collector(queue, procs)
            collector.take("registered", peers, START_TIMEOUT_S)
            barrier.wait(ROUND_TIMEOUT_S)
            collector.take("connected", peers, START_TIMEOUT_S)
            measured: list[list[Message]] = []
            walls = []
            warmup = -1
            for index in range(rounds + 1):
                barrier.wait(ROUND_TIMEOUT_S)
                start = time.perf_counter()
                messages = collector.take("round", peers, ROUND_TIMEOUT_S)
                if index:  # round 0 is the initial sync (warm-up)
                    measured.append(messages)
                    walls.append(time.perf_counter() - start)
                else:
                    warmup = messages[0]["round"]
            barrier.wait(ROUND_TIMEOUT_S)
            done = collector.take("done", peers, START_TIMEOUT_S)
            for proc in procs:
                proc.join(30)
            history = next(m["history"] for m in done if m["peer"] == "b1")
            first = next((h for h in history if h["round"] == warmup), None)
            if first is not None and first.get("secagg") is not None:
                raise CellError(f"the warm-up round {warmup} was masked: {first['secagg']}")
            clean = []
            for messages, wall in zip(measured, walls, strict=True):
                record = next((h for h in history if h["round"] == messages[0]["round"]), None)
                if record is None:
                    raise CellError(f"round {messages[0]['round']} is not in the ledger's history")
                gaps = [f"{e['name']} ({e['reason'][:160]})" for e in record["excluded"]]
                gaps += [f"leader {name} timed out" for name in record["failed_leaders"]]
                if len(record["participants"]) < peers:
                    gaps.append(f"only {len(record['participants'])} participants")
                masked = record.get("secagg")
                if secure and masked is None:
                    gaps.append("not masked (no secagg on the ledger)")
                elif secure and len(masked["survivors"] or []) < peers:
                    gaps.append(f"masked with {len(masked['survivors'] or [])} survivors "
                                f"({', '.join(masked['survivors'] or [])})")  # fmt: skip
                elif not secure and masked is not None:
                    gaps.append(f"masked, though secure aggregation is off: {masked}")
                if gaps:
                    cell.left_out.append(f"round {record['round']}: {'; '.join(gaps)}")
                else:
                    clean.append((messages, wall))
                    cell.secagg.append(masked)
            if not clean:
                raise CellError("every measured round left peers out: " + " | ".join(cell.left_out))
            summarize(cell, [m for m, _ in clean])
            cell.rounds_used = len(clean)
            cell.wall_s = statistics.median(w for _, w in clean)
            cell.rss_peak_gb = collector.peak_rss / GB
        finally:
            barrier.abort()
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
                proc.join(10)
            net.close()
    cell.seconds = time.perf_counter() - started
    cell.load1_end = os.getloadavg()[0]
    return cell


def fmt_phase(view: dict[str, float], key: str) -> str:
    return f"{view[key]:7.3f}" if key in view else f"{'-':>7}"


def print_table(cells: list[Cell]) -> None:
    head = (
        f"{'P':>4} {'K':>2} {'aud':>3} {'sa':>3} {'compression':>13} {'method':>12} {'mem':>5} "
        f"{'topo':>7} {'round':>7} {'MB':>6} {'in':>4} {'out':>4} {'floor':>7} "
        f"{'xfloor':>6} |"
        f"{'L.enc':>7} {'L.xfer':>7} {'L.merge':>7} {'L.load':>7} {'L.ledger(rpc)':>14} |"
        f"{'F.enc':>7} {'F.xfer':>7} {'F.load':>7} {'F.ledger(rpc)':>14} |"
        f"{'L.mem':>5} {'F.mem':>5} {'n':>2} {'rssGB':>6} {'load1':>5}"
    )
    print(head)
    print("-" * len(head))
    for c in cells:
        if c.skipped:
            continue
        lead, fol = c.leader, c.follower
        print(
            f"{label(c.count):>4} {c.peers:>2} {c.audit:>3} {'on' if c.secure else 'off':>3} "
            f"{c.compression:>13} {c.method:>12} "
            f"{c.memory:>5} {c.topology:>7} {c.round_s:7.3f} "
            f"{c.fetched_mb:6.1f} {c.most_in:4.2f} {c.most_out:4.2f} "
            f"{c.floor_s:7.4f} "
            f"{c.round_s / c.floor_s:6.0f} |"
            f"{fmt_phase(lead, 'encode')} {fmt_phase(lead, 'transfer')} "
            f"{fmt_phase(lead, 'merge')} {fmt_phase(lead, 'load')} "
            f"{lead['ledger']:7.3f}({lead['rpc']:5.3f}) |"
            f"{fmt_phase(fol, 'encode')} {fmt_phase(fol, 'transfer')} {fmt_phase(fol, 'load')} "
            f"{fol['ledger']:7.3f}({fol['rpc']:5.3f}) |"
            f"{c.leader_copies:5.1f} {c.follower_copies:5.1f} "
            f"{c.rounds_used:>2} {c.rss_peak_gb:6.1f} {c.load1:5.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1M,10M,50M", help="parameter counts, e.g. 1M,10M")
    parser.add_argument("--peers", default="2,4,8", help="peer counts K, e.g. 2,4,8")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per cell")
    parser.add_argument("--quick", action="store_true", help="P in 1M,10M and K in 2,4")
    parser.add_argument(
        "--keep-rounds", type=int, default=0, help="old rounds a peer's store keeps (openswarm: 3)"
    )
    parser.add_argument(
        "--mem-fraction", type=float, default=0.8, help="skip cells over this share of MemAvailable"
    )
    parser.add_argument("--audit", default="0", help="auditors per merge, e.g. 0,1,3")
    parser.add_argument(
        "--secure-aggregation", default="off",
        help="masked rounds (secure_aggregation threshold 2, bound 1.0): off,on",
    )  # fmt: skip
    parser.add_argument(
        "--compression", default="none", help="how models travel, e.g. none,zstd,int8+zstd"
    )
    parser.add_argument("--method", default="mean", help="merge methods, e.g. mean,geomedian")
    parser.add_argument(
        "--merge-memory", default="model", help="how leaders hold snapshots: model,layer"
    )
    parser.add_argument(
        "--topology", default="leader", help="who merges (merge_topology): leader,sharded"
    )
    parser.add_argument(
        "--layers", type=int, default=0, help="N tensors of equal size (default: P/2, P/4, ...)"
    )
    parser.add_argument(
        "--link-mbit", type=int, default=0,
        help="each peer in its own network namespace behind an N Mbit/s link (root, tc)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.peers = "1M,10M", "2,4"
    sizes = [parse_count(s) for s in args.sizes.split(",") if s]
    peer_counts = [int(k) for k in args.peers.split(",") if k]
    audits = [int(a) for a in args.audit.split(",") if a]
    secures = [{"off": False, "on": True}.get(v) for v in args.secure_aggregation.split(",") if v]
    if None in secures:
        parser.error("--secure-aggregation takes off, on or off,on")
    compressions = [z for z in args.compression.split(",") if z]
    methods = [m for m in args.method.split(",") if m]
    memories = [m for m in args.merge_memory.split(",") if m]
    topologies = [t for t in args.topology.split(",") if t]
    if args.rounds < 1 or any(k < 2 for k in peer_counts):
        parser.error("--rounds must be >= 1 and every K >= 2")

    print(
        f"round_bench: {os.cpu_count()} CPUs, {mem_available() / GB:.1f} GB available, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{args.rounds} measured rounds after 1 warm-up; store keeps {args.keep_rounds} "
        "old rounds",
        flush=True,
    )
    cells: list[Cell] = []
    grid = [(c, k, a, z, m, r, t, q) for c in sizes for k in peer_counts for a in audits
            for z in compressions for m in methods for r in memories
            for t in topologies for q in secures]  # fmt: skip
    for count, peers, audit, compression, method, memory, topology, secure in grid:
        variant = (f"audit={audit} {compression} {method}/{memory} {topology} "
                   f"sa={'on' if secure else 'off'}")  # fmt: skip
        keep = max(args.keep_rounds, 1) if secure else args.keep_rounds
        estimate = max(estimate_bytes(count, peers, keep, secure), 2 * peers * count * 4)
        budget = args.mem_fraction * mem_available()
        cell = Cell(count, peers, audit=audit, compression=compression, method=method,
                    memory=memory, topology=topology, secure=secure, keep_rounds=keep,
                    estimate_gb=estimate / GB)  # fmt: skip
        if estimate > budget:
            cell.skipped = (
                f"needs ~{estimate / GB:.1f} GB, over {args.mem_fraction:.0%} of "
                f"{budget / args.mem_fraction / GB:.1f} GB available"
            )
        else:
            try:
                cell = run_cell(count, peers, args.rounds, args.keep_rounds, audit, compression,
                                method, memory, args.layers, args.link_mbit,
                                topology, secure)  # fmt: skip
                cell.estimate_gb = estimate / GB
            except (CellError, RuntimeError, OSError, TimeoutError) as exc:
                cell.skipped = f"failed: {str(exc)[-2000:]}"
        cells.append(cell)
        if cell.skipped:
            print(f"  P={label(count)} K={peers} {variant}: skipped "
                  f"({cell.skipped})",
                  flush=True)  # fmt: skip
        else:
            print(
                f"  P={label(count)} K={peers} {variant}: "
                f"round {cell.round_s:.3f} s, "
                f"{cell.fetched_mb:.1f} MB fetched, "
                f"floor {cell.floor_s:.4f} s, cell took {cell.seconds:.0f} s, peers' peak "
                f"RSS {cell.rss_peak_gb:.1f} GB (est. {cell.estimate_gb:.1f}), leaders "
                f"{','.join(cell.leaders)}, load1 {cell.load1:.2f} -> {cell.load1_end:.2f}",
                flush=True,
            )
            for note in cell.left_out:
                print(f"    not counted, {note}", flush=True)
    print()
    print("seconds per round, medians over measured rounds (L = leader, F = followers)")
    print_table(cells)
    skipped = [c for c in cells if c.skipped]
    if skipped:
        print("\nskipped cells:")
        for c in skipped:
            print(f"  P={label(c.count)} K={c.peers} sa={'on' if c.secure else 'off'}: "
                  f"{c.skipped}")  # fmt: skip
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in cells], indent=2))
    return 1 if any(c.skipped and c.skipped.startswith("failed") for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
