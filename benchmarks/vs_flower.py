"""openswarm against Flower: seconds per sync round, side by side, on loopback.

Run it in `.venv-flower` (built by `make bench-flower`, which also runs it), where one
interpreter has both openswarm (`-e .`) and Flower (`flwr`, pinned in the Makefile).

Each cell (K peers, P float32 parameters) starts both systems at once, on 127.0.0.1, and
then alternates their rounds: openswarm round 0, Flower round 0, openswarm round 1, Flower
round 1, ... Round 0 is a warm-up on both sides and is not counted; the next `--rounds`
(default 5) are. While one system runs a round the other one's processes sit idle (blocked
on a barrier or a queue; their CPU use meanwhile is measured and printed, columns os.idle
and fl.idle, so that it can be seen not to matter). Reported per cell: the median over the
measured rounds on each side and the ratio openswarm / Flower (the target of issue 11 is a
ratio of at most 0.5 in every cell).

openswarm (the mechanics of benchmarks/round_bench.py, whose helpers are imported): a real
ledger replica (`LocalLedger`, one `openswarm ledger start` process) and K peer processes
(b1..bK) that sync the default contract with `SwarmPeer.sync`; every hop (ledger and
exchange) is mutual TLS with certificates of the swarm's own CA. Each peer holds a dict of
four float32 arrays summing to P values (random, different per peer). Before the rounds
every peer opens its exchange channel to every other; round 0 is the contract's initial
sync (the leader hands out its model, no merge). A barrier starts each round on all peers
at once. A round = the max over peers of the seconds `SwarmPeer.sync` took: publish, ready,
quorum, leader election, the leader pulling and checking K-1 snapshots, the weighted mean,
publishing it, every follower fetching, checking and decoding it. The round ends with the
merged model as numpy arrays on every peer (nothing is copied into a framework's tensors,
unlike round_bench's "load" phase). Rounds in which a peer was not a participant, was left
out of the merge or a leader timed out are not counted (column n: rounds counted).

Flower (its legacy API, `flwr.server.start_server` / `flwr.client.start_client`, gRPC
bidirectional streams): a server process running FedAvg (fraction_fit=1.0,
min_fit_clients=min_available_clients=K, fraction_evaluate=0.0 so no evaluation round, no
centralized evaluation, initial parameters given to the strategy: the same four float32
arrays of P values) and K client processes whose `NumPyClient.fit` returns its input
parameters unchanged (num_examples 1). A round = seconds, measured inside the server, from
the strategy's `configure_fit` being called (the parent's go; so it includes sampling the
clients and building the instructions) to the end of `aggregate_fit` (the weighted mean of
the K results and its serialization to Parameters): sending the global model to the K
clients, each deserializing it to numpy, serializing it back and sending it, the server
deserializing the K results and averaging them. The model reaches the clients at the start
of the next round, so in steady state one round covers the same traffic as openswarm's:
P*4 bytes down to and up from each of K-1..K sites, with one process (server / leader)
at the centre.

Not the same on both sides, and handled so:
- Security: openswarm is mutual TLS everywhere; Flower's gRPC is plaintext by default
  (`insecure=True`). `--flower-tls` gives Flower server-side TLS (a CA and a server
  certificate for 127.0.0.1 made with openswarm.pki; the legacy API has no client
  certificates), so the comparison can be made both ways.
- Coordination: openswarm's round includes its ledger (transactions, polls, the leader's
  election) and digests (sha256) of every snapshot; Flower has none (os.ledger shows the
  leader's ledger time).
- Processes: openswarm has K peers plus a ledger process; Flower K clients plus a server.
  Both sides get the same CPUs; on a 2-core machine everything is CPU-bound, so the figures
  follow the load average (load1, taken when each cell starts). os.cpu and fl.cpu are the
  CPU-seconds per round of each side's own processes.
- Payload: identical shapes and dtype; openswarm encodes safetensors, Flower `np.save`
  bytes in protobuf; both carry the parameters once per hop (headers aside).
- Both run in the same interpreter (same numpy, grpcio, cryptography) and telemetry of
  Flower is off (FLWR_TELEMETRY_ENABLED=0; this machine has no way out anyway).

Run:
    make bench-flower                                    # K in 2,4,8 x P in 1M,10M
    make bench-flower FLOWER_ARGS=--quick                # K in 2,4 x P in 1M,10M, 3 rounds
    .venv-flower/bin/python benchmarks/vs_flower.py --peers 4,8 --params 1M --rounds 7 \\
        [--flower-tls] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Barrier as MpBarrier
from pathlib import Path
from typing import Any

import numpy as np
from round_bench import (
    GB,
    ROUND_TIMEOUT_S,
    START_TIMEOUT_S,
    CellError,
    Collector,
    Message,
    bench_settings,
    connect_all,
    estimate_bytes,
    label,
    mem_available,
    parse_count,
    tensor_sizes,
)

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.local import LocalLedger

TARGET_RATIO = 0.5  # issue 11: every cell at most half of Flower's round
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
FLOWER_PROCESS_BYTES = 250_000_000  # a Flower process's own footprint (Python, gRPC, flwr)
DEFAULT_KEEP_ROUNDS = 3  # openswarm's snapshot store default, for the memory estimate


def make_params(count: int, seed: int) -> dict[str, np.ndarray]:
    """Four float32 arrays summing to `count` values, as round_bench's peers hold."""
    rng = np.random.default_rng(seed)
    return {
        f"layer{i}.weight": rng.random(n, dtype=np.float32) - np.float32(0.5)
        for i, n in enumerate(tensor_sizes(count))
    }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes (0 for any gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / CLOCK_TICK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- openswarm peer (a spawned process) ------------------------------------------------------


@dataclass(frozen=True)
class PeerConfig:
    index: int
    peers: int
    count: int
    rounds: int
    endpoints: tuple[str, ...]
    identity: str


def swarm_peer(cfg: PeerConfig, queue: MpQueue[Message], barrier: MpBarrier) -> None:
    """One openswarm peer: register, connect, then sync `1 + rounds` times."""
    name = f"b{cfg.index + 1}"
    try:
        from openswarm.node.peer import SwarmPeer
        from openswarm.node.settings import NetworkConfig

        params = make_params(cfg.count, 1000 + cfg.index)
        network = NetworkConfig(ledger=cfg.endpoints, identity=Path(cfg.identity))
        peer = SwarmPeer(bench_settings(cfg.peers), network)
        peer.register()
        queue.put({"kind": "registered", "peer": name})
        barrier.wait(ROUND_TIMEOUT_S)  # all registered: every endpoint is on the ledger
        connect_all(peer)
        queue.put({"kind": "connected", "peer": name})
        for index in range(cfg.rounds + 1):
            barrier.wait(ROUND_TIMEOUT_S)
            result = peer.sync(params)
            if result.params is None:
                raise RuntimeError(f"round {result.round} ended without a merged model")
            queue.put({
                "kind": "round", "peer": name, "index": index, "round": result.round,
                "leader": result.leader, "participants": len(result.participants),
                "timings": dict(result.timings),
            })  # fmt: skip
            del result
        barrier.wait(ROUND_TIMEOUT_S)  # everyone has the last merged model: stop serving
        peer.close()
        queue.put({"kind": "done", "peer": name})
    except BaseException:
        queue.put({"kind": "error", "peer": name, "error": traceback.format_exc()})
        barrier.abort()


# --- Flower server and clients (spawned processes) -------------------------------------------


@dataclass(frozen=True)
class FlowerConfig:
    peers: int
    count: int
    rounds: int
    address: str
    tls: tuple[bytes, bytes, bytes] | None  # (CA, server certificate, server key), PEM


def quiet_flower() -> None:
    """Flower logs every round and a deprecation banner at INFO/WARNING: errors only."""
    logging.getLogger("flwr").setLevel(logging.ERROR)


def flower_server(cfg: FlowerConfig, queue: MpQueue[Message], go: MpQueue[int]) -> None:
    """Flower's legacy server with FedAvg; each round waits for the parent's go and reports
    the seconds from configure_fit to the end of aggregate_fit."""
    try:
        import flwr as fl
        from flwr.server.strategy import FedAvg

        quiet_flower()

        class TimedFedAvg(FedAvg):  # type: ignore[misc]
            started = 0.0

            def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
                if server_round == 1:
                    if not client_manager.wait_for(cfg.peers, timeout=int(START_TIMEOUT_S)):
                        raise RuntimeError(f"fewer than {cfg.peers} Flower clients connected")
                    queue.put({"kind": "ready", "peer": "server"})
                go.get(timeout=ROUND_TIMEOUT_S)
                self.started = time.perf_counter()
                return super().configure_fit(server_round, parameters, client_manager)

            def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
                out = super().aggregate_fit(server_round, results, failures)
                queue.put({
                    "kind": "round", "peer": "server", "index": server_round - 1,
                    "seconds": time.perf_counter() - self.started,
                    "results": len(results), "failures": len(failures),
                })  # fmt: skip
                return out

        initial = list(make_params(cfg.count, 999).values())
        strategy = TimedFedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=cfg.peers,
            min_evaluate_clients=cfg.peers, min_available_clients=cfg.peers,
            initial_parameters=fl.common.ndarrays_to_parameters(initial),
        )  # fmt: skip
        del initial
        fl.server.start_server(
            server_address=cfg.address,
            config=fl.server.ServerConfig(num_rounds=cfg.rounds + 1),
            strategy=strategy,
            certificates=cfg.tls,
        )
        queue.put({"kind": "done", "peer": "server"})
    except BaseException:
        queue.put({"kind": "error", "peer": "server", "error": traceback.format_exc()})


def flower_client(cfg: FlowerConfig, index: int, queue: MpQueue[Message]) -> None:
    """A Flower client whose fit returns its input; runs until the server disconnects it."""
    try:
        import flwr as fl

        quiet_flower()

        class EchoClient(fl.client.NumPyClient):  # type: ignore[misc]
            def fit(self, parameters: Any, config: Any) -> tuple[Any, int, dict[str, Any]]:
                return parameters, 1, {}

        fl.client.start_client(
            server_address=cfg.address,
            client=EchoClient().to_client(),
            insecure=cfg.tls is None,
            root_certificates=cfg.tls[0] if cfg.tls else None,
        )
    except BaseException:
        queue.put({"kind": "error", "peer": f"c{index + 1}", "error": traceback.format_exc()})


def flower_certificates(folder: Path) -> tuple[bytes, bytes, bytes]:
    """A CA and a server certificate for 127.0.0.1 and localhost, for --flower-tls."""
    from openswarm.pki import init_ca, issue_identity

    init_ca(folder, "flowerbench")
    server = issue_identity(folder, "flower-server", "peer", hosts=["127.0.0.1", "localhost"])
    return (
        (folder / "ca.crt").read_bytes(),
        (server / "identity.crt").read_bytes(),
        (server / "identity.key").read_bytes(),
    )


# --- the parent ------------------------------------------------------------------------------


@dataclass
class Cell:
    count: int
    peers: int
    swarm_s: float = 0.0
    flower_s: float = 0.0
    ratio: float = 0.0  # median openswarm round / median Flower round
    paired_ratio: float = 0.0  # median over i of openswarm round i / Flower round i
    swarm_rounds: list[float] = field(default_factory=list)
    flower_rounds: list[float] = field(default_factory=list)
    swarm_ledger_s: float = 0.0  # the leader's ledger time (median)
    swarm_cpu_s: float = 0.0  # CPU-seconds per round of openswarm's processes (median)
    flower_cpu_s: float = 0.0
    swarm_idle_cpu_s: float = 0.0  # openswarm's CPU-seconds during a Flower round (max)
    flower_idle_cpu_s: float = 0.0
    swarm_rss_gb: float = 0.0
    flower_rss_gb: float = 0.0
    left_out: list[str] = field(default_factory=list)
    load1: float = 0.0
    load1_end: float = 0.0
    seconds: float = 0.0
    skipped: str | None = None


def estimate_cell_bytes(count: int, peers: int) -> int:
    """Both systems alive at once: round_bench's openswarm estimate (store default) plus
    Flower's server (K results, their decoded copies, the model, the aggregate) and clients."""
    size = count * 4
    flower = (2 * peers + 4) * size + peers * 4 * size + (peers + 1) * FLOWER_PROCESS_BYTES
    return estimate_bytes(count, peers, DEFAULT_KEEP_ROUNDS) + flower


def ledger_gaps(net: LocalLedger, rounds: list[int], peers: int) -> dict[int, str]:
    """Ledger rounds (of those given) where a peer was left out or a leader timed out."""
    with net.client("admin") as client:
        history = client.state(DEFAULT_CONTRACT)["state"]["history"]
    gaps: dict[int, str] = {}
    for number in rounds:
        record = next((h for h in history if h["round"] == number), None)
        if record is None:
            gaps[number] = "not in the ledger's history"
            continue
        notes = [f"{e['name']} left out ({e['reason'][:160]})" for e in record["excluded"]]
        notes += [f"leader {name} timed out" for name in record["failed_leaders"]]
        if len(record["participants"]) < peers:
            notes.append(f"only {len(record['participants'])} participants")
        if notes:
            gaps[number] = "; ".join(notes)
    return gaps


def stop_processes(procs: list[BaseProcess]) -> None:
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def run_cell(count: int, peers: int, rounds: int, tls: bool) -> Cell:
    """Both systems up, then `1 + rounds` alternating rounds (openswarm first)."""
    cell = Cell(count, peers, load1=os.getloadavg()[0])
    started = time.perf_counter()
    names = [f"b{i}" for i in range(1, peers + 1)]
    ctx = mp.get_context("spawn")
    swarm_queue: MpQueue[Message] = ctx.Queue()
    flower_queue: MpQueue[Message] = ctx.Queue()
    go: MpQueue[int] = ctx.Queue()
    barrier = ctx.Barrier(peers + 1)
    swarm_procs: list[BaseProcess] = []
    flower_procs: list[BaseProcess] = []
    with tempfile.TemporaryDirectory(prefix="vs_flower_") as tmp:
        contract = bench_settings(peers).contract_settings()
        net = LocalLedger.create(
            Path(tmp) / "ledger", replicas=1, peers=names, contract_settings=contract
        )
        try:
            net.start()
            net.wait_ready()
            for index in range(peers):
                cfg = PeerConfig(
                    index, peers, count, rounds, tuple(net.endpoints),
                    str(net.pki_dir / "identities" / names[index]),
                )  # fmt: skip
                proc = ctx.Process(target=swarm_peer, args=(cfg, swarm_queue, barrier), daemon=True)
                proc.start()
                swarm_procs.append(proc)
            swarm = Collector(swarm_queue, swarm_procs)
            swarm.take("registered", peers, START_TIMEOUT_S)
            barrier.wait(ROUND_TIMEOUT_S)
            swarm.take("connected", peers, START_TIMEOUT_S)

            certs = flower_certificates(Path(tmp) / "flower-pki") if tls else None
            fcfg = FlowerConfig(peers, count, rounds, f"127.0.0.1:{free_port()}", certs)
            server = ctx.Process(target=flower_server, args=(fcfg, flower_queue, go), daemon=True)
            server.start()
            flower_procs.append(server)
            for index in range(peers):
                proc = ctx.Process(
                    target=flower_client, args=(fcfg, index, flower_queue), daemon=True
                )
                proc.start()
                flower_procs.append(proc)
            flower = Collector(flower_queue, flower_procs)
            flower.take("ready", 1, START_TIMEOUT_S)

            replica = net.replicas[0].process
            swarm_pids = [p.pid or 0 for p in swarm_procs] + ([replica.pid] if replica else [])
            flower_pids = [p.pid or 0 for p in flower_procs]
            swarm_rounds: list[tuple[list[Message], float, float]] = []
            flower_rounds: list[tuple[Message, float, float]] = []
            for index in range(rounds + 1):
                busy, idle = cpu_seconds(swarm_pids), cpu_seconds(flower_pids)
                barrier.wait(ROUND_TIMEOUT_S)
                messages = swarm.take("round", peers, ROUND_TIMEOUT_S)
                swarm_cpu = cpu_seconds(swarm_pids) - busy
                flower_idle = cpu_seconds(flower_pids) - idle
                busy, idle = cpu_seconds(flower_pids), cpu_seconds(swarm_pids)
                go.put(index)
                (message,) = flower.take("round", 1, ROUND_TIMEOUT_S)
                flower_cpu = cpu_seconds(flower_pids) - busy
                swarm_idle = cpu_seconds(swarm_pids) - idle
                if index:  # round 0 is the warm-up on both sides
                    swarm_rounds.append((messages, swarm_cpu, swarm_idle))
                    flower_rounds.append((message, flower_cpu, flower_idle))
            barrier.wait(ROUND_TIMEOUT_S)
            swarm.take("done", peers, START_TIMEOUT_S)
            flower.take("done", 1, START_TIMEOUT_S)
            for proc in [*swarm_procs, *flower_procs]:
                proc.join(30)
            cell.swarm_rss_gb = swarm.peak_rss / GB
            cell.flower_rss_gb = flower.peak_rss / GB
            summarize(cell, net, swarm_rounds, flower_rounds)
        finally:
            barrier.abort()
            stop_processes(swarm_procs + flower_procs)
            net.close()
            for queue in (swarm_queue, flower_queue, go):
                queue.close()
                queue.cancel_join_thread()
    cell.seconds = time.perf_counter() - started
    cell.load1_end = os.getloadavg()[0]
    return cell


def summarize(
    cell: Cell,
    net: LocalLedger,
    swarm_rounds: list[tuple[list[Message], float, float]],
    flower_rounds: list[tuple[Message, float, float]],
) -> None:
    """Medians over the counted rounds of each side."""
    numbers = [messages[0]["round"] for messages, _, _ in swarm_rounds]
    try:
        gaps = ledger_gaps(net, numbers, cell.peers)
    except Exception as exc:  # the ledger's state API is being reworked (issue 11)
        gaps = {}
        cell.left_out.append(f"ledger history not checked ({type(exc).__name__}: {exc})")
    swarm_times: dict[int, float] = {}  # by measured round (pairs with Flower's)
    ledger_times, swarm_cpu = [], []
    for index, (messages, cpu, _) in enumerate(swarm_rounds):
        number = messages[0]["round"]
        short = [m["peer"] for m in messages if m["participants"] < cell.peers]
        if short:
            gaps[number] = f"{','.join(short)} saw fewer than {cell.peers} participants"
        if number in gaps:
            cell.left_out.append(f"openswarm round {number}: {gaps[number]}")
            continue
        swarm_times[index] = max(m["timings"]["total"] for m in messages)
        lead = [m for m in messages if m["peer"] == m["leader"]]
        ledger_times.append(lead[0]["timings"].get("ledger", 0.0) if lead else 0.0)
        swarm_cpu.append(cpu)
    flower_times: dict[int, float] = {}
    flower_cpu = []
    for index, (message, cpu, _) in enumerate(flower_rounds):
        if message["results"] < cell.peers or message["failures"]:
            cell.left_out.append(
                f"Flower round {message['index'] + 1}: {message['results']} results, "
                f"{message['failures']} failures"
            )
            continue
        flower_times[index] = message["seconds"]
        flower_cpu.append(cpu)
    if not swarm_times or not flower_times:
        raise CellError("no counted rounds: " + " | ".join(cell.left_out))
    cell.swarm_rounds = list(swarm_times.values())
    cell.flower_rounds = list(flower_times.values())
    cell.swarm_s = statistics.median(cell.swarm_rounds)
    cell.flower_s = statistics.median(cell.flower_rounds)
    cell.ratio = cell.swarm_s / cell.flower_s
    paired = [swarm_times[i] / flower_times[i] for i in swarm_times if i in flower_times]
    cell.paired_ratio = statistics.median(paired) if paired else float("nan")
    cell.swarm_ledger_s = statistics.median(ledger_times)
    cell.swarm_cpu_s = statistics.median(swarm_cpu)
    cell.flower_cpu_s = statistics.median(flower_cpu)
    cell.swarm_idle_cpu_s = max(idle for _, _, idle in flower_rounds)
    cell.flower_idle_cpu_s = max(idle for _, _, idle in swarm_rounds)


def print_table(cells: list[Cell]) -> None:
    head = (
        f"{'K':>2} {'P':>4} {'openswarm':>9} {'Flower':>8} {'ratio':>6} {'paired':>6} "
        f"{'<=0.5':>5} |"
        f"{'os.ledger':>9} {'os.cpu':>7} {'fl.cpu':>7} {'os.idle':>7} {'fl.idle':>7} |"
        f"{'n':>3} {'os.GB':>5} {'fl.GB':>5} {'load1':>5}"
    )
    print(head)
    print("-" * len(head))
    for c in cells:
        if c.skipped:
            print(f"{c.peers:>2} {label(c.count):>4}  skipped")
            continue
        n = f"{len(c.swarm_rounds)}/{len(c.flower_rounds)}"
        print(
            f"{c.peers:>2} {label(c.count):>4} {c.swarm_s:9.3f} {c.flower_s:8.3f} "
            f"{c.ratio:6.2f} {c.paired_ratio:6.2f} "
            f"{'yes' if c.ratio <= TARGET_RATIO else 'no':>5} |"
            f"{c.swarm_ledger_s:9.3f} {c.swarm_cpu_s:7.2f} {c.flower_cpu_s:7.2f} "
            f"{c.swarm_idle_cpu_s:7.2f} {c.flower_idle_cpu_s:7.2f} |"
            f"{n:>3} {c.swarm_rss_gb:5.1f} {c.flower_rss_gb:5.1f} {c.load1:5.2f}"
        )


def describe_source() -> str:
    """Where openswarm is imported from, its git commit and whether openswarm/ is edited."""
    import openswarm

    root = Path(openswarm.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "openswarm"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        state = f"git {commit}{' + uncommitted changes in openswarm/' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        state = "not a git checkout"
    return f"openswarm from {root} ({state})"


def versions() -> str:
    found = []
    for name in ("flwr", "grpcio", "protobuf", "numpy", "cryptography"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # so that every cell's `finally` stops its processes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="2,4,8", help="peer counts K, e.g. 2,4,8")
    parser.add_argument("--params", default="1M,10M", help="parameter counts P, e.g. 1M,10M")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per side and cell")
    parser.add_argument("--quick", action="store_true", help="K in 2,4; P in 1M,10M; 3 rounds")
    parser.add_argument("--flower-tls", action="store_true", help="Flower over TLS (server-side)")
    parser.add_argument(
        "--mem-fraction", type=float, default=0.8, help="skip cells over this share of MemAvailable"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.peers, args.params, args.rounds = "2,4", "1M,10M", 3
    sizes = [parse_count(s) for s in args.params.split(",") if s]
    peer_counts = [int(k) for k in args.peers.split(",") if k]
    if args.rounds < 1 or any(k < 2 for k in peer_counts):
        parser.error("--rounds must be >= 1 and every K >= 2")
    try:
        importlib.metadata.version("flwr")
    except importlib.metadata.PackageNotFoundError:
        print(
            "error: Flower (flwr) is not installed here; run `make bench-flower`", file=sys.stderr
        )
        return 2
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"  # inherited by the spawned Flower processes
    signal.signal(signal.SIGTERM, on_sigterm)

    print(
        f"vs_flower: {os.cpu_count()} CPUs, {mem_available() / GB:.1f} GB available, load "
        f"average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.rounds} measured "
        f"rounds per side after 1 warm-up, alternating; Flower over "
        f"{'TLS (server-side)' if args.flower_tls else 'plaintext gRPC'}, openswarm mutual TLS",
        flush=True,
    )
    print(f"  {describe_source()}\n  {versions()}", flush=True)
    cells: list[Cell] = []
    for count in sizes:
        for peers in peer_counts:
            estimate = estimate_cell_bytes(count, peers)
            budget = args.mem_fraction * mem_available()
            cell = Cell(count, peers)
            if estimate > budget:
                cell.skipped = f"needs ~{estimate / GB:.1f} GB, over {budget / GB:.1f} GB"
            else:
                try:
                    cell = run_cell(count, peers, args.rounds, args.flower_tls)
                except (CellError, RuntimeError, OSError, TimeoutError) as exc:
                    cell.skipped = f"failed: {str(exc)[-2000:]}"
            cells.append(cell)
            if cell.skipped:
                print(f"  K={peers} P={label(count)}: skipped ({cell.skipped})", flush=True)
                continue
            print(
                f"  K={peers} P={label(count)}: openswarm {cell.swarm_s:.3f} s "
                f"({' '.join(f'{t:.3f}' for t in cell.swarm_rounds)}), Flower "
                f"{cell.flower_s:.3f} s ({' '.join(f'{t:.3f}' for t in cell.flower_rounds)}), "
                f"ratio {cell.ratio:.2f} (paired {cell.paired_ratio:.2f}); cell took "
                f"{cell.seconds:.0f} s, load1 "
                f"{cell.load1:.2f} -> {cell.load1_end:.2f}",
                flush=True,
            )
            for note in cell.left_out:
                print(f"    not counted: {note}", flush=True)
    print()
    print("seconds per round, medians over the counted rounds (ratio = openswarm / Flower;")
    print("paired: median of the ratios of rounds run back to back, less sensitive to load);")
    print("os.ledger: openswarm leader's ledger time; cpu: CPU-s per round of each side's")
    print("processes; idle: the other side's CPU-s during a round (max); n: rounds counted")
    print_table(cells)
    done = [c for c in cells if not c.skipped]
    met = sum(c.ratio <= TARGET_RATIO for c in done)
    print(f"\ntarget (openswarm <= {TARGET_RATIO}x Flower): met in {met} of {len(done)} cells")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in cells], indent=2))
    return 1 if any(c.skipped and c.skipped.startswith("failed") for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
