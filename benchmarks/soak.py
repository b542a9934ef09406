"""Soak: many sync rounds of a few peers with a tiny model; does anything grow with the run?

One embedded ledger replica (`LocalLedger`, its own process) and K peer processes (spawned
workers of this file) sync a 10-value float32 model `--rounds` times (default 1,000) through
`SwarmPeer.sync`, each reporting a loss after every merge as a training site does, over
mutual TLS on loopback, as fast as the protocol goes. At rounds 10,
100 and 1,000 (and the last) it reports, for the window since the checkpoint before:

- ledger msgs/round and KB/round: messages and bytes the ledger node sent (its `status`
  counts every unary answer and every pushed state, per method), per round;
- round s: the median round time as peer 1 sees it (`sync` from call to return);
- peers MB and ledger MB: summed RSS of the peer processes, and the ledger process's RSS.

Flat columns mean the ledger's work per round and everyone's memory do not grow with the
run's history. `python benchmarks/soak.py [--rounds 1000] [--peers 4]`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.queues import Queue as MpQueue
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINTS = (10, 100, 1000)


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peer_worker(endpoints: list[str], identity: str, peers: int, rounds: int,
                queue: MpQueue[tuple[str, int, float]]) -> None:  # fmt: skip
    """One site: register, then `rounds` syncs of a tiny model; reports each round's time."""
    from openswarm.node.peer import SwarmPeer
    from openswarm.node.settings import NetworkConfig, SwarmSettings

    settings = SwarmSettings(min_peers=peers, extra_window_s=0.0)
    peer = SwarmPeer(settings, NetworkConfig(ledger=tuple(endpoints), identity=Path(identity)))
    try:
        peer.register()
        rng = np.random.default_rng(int(identity[-1]))
        for r in range(1, rounds + 1):
            params = {"w": rng.standard_normal(10).astype(np.float32)}
            started = time.perf_counter()
            result = peer.sync(params)
            queue.put((peer.name, r, time.perf_counter() - started))
            if result.params is not None:  # as a training site does after each merge
                loss = float(np.mean(np.square(result.params["w"])))
                peer.report_metrics(result.round, loss, None, r, rounds)
    finally:
        peer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--peers", type=int, default=4)
    args = parser.parse_args(argv)
    from openswarm.ledger.local import LocalLedger

    names = [f"s{i}" for i in range(1, args.peers + 1)]
    checkpoints = sorted({c for c in CHECKPOINTS if c < args.rounds} | {args.rounds})
    with tempfile.TemporaryDirectory(prefix="openswarm-soak-") as tmp:
        ledger = LocalLedger.create(Path(tmp) / "ledger", peers=names,
                                    contract_settings={"min_peers": args.peers})  # fmt: skip
        ledger.start()
        try:
            ledger.wait_ready()
            admin = ledger.client("admin")
            ledger_pid = ledger.replicas[0].process.pid  # type: ignore[union-attr]
            ctx = mp.get_context("spawn")
            queue: MpQueue[tuple[str, int, float]] = ctx.Queue()
            workers = [
                ctx.Process(target=peer_worker, args=(ledger.endpoints, str(
                    ledger.identity_dir(n)), args.peers, args.rounds, queue), daemon=True)
                for n in names
            ]  # fmt: skip
            for worker in workers:
                worker.start()
            rows = _measure(queue, admin, workers, ledger_pid, names[0], checkpoints)
            for worker in workers:
                worker.join(timeout=60)
        finally:
            ledger.close()
    print(f"{args.peers} peers, 10 float32 values, {args.rounds} rounds, load "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'round':>6} {'msgs/round':>11} {'KB/round':>9} {'round s':>8} {'peers MB':>9} "
          f"{'ledger MB':>10}")  # fmt: skip
    for row in rows:
        print(f"{row['round']:>6} {row['msgs']:>11.1f} {row['kb']:>9.1f} {row['round_s']:>8.3f} "
              f"{row['peers_mb']:>9.0f} {row['ledger_mb']:>10.0f}")  # fmt: skip
    return 0


def _measure(
    queue: MpQueue[tuple[str, int, float]], admin: Any, workers: list[Any], ledger_pid: int,
    first: str, checkpoints: list[int],
) -> list[dict[str, float]]:  # fmt: skip
    """Follow peer `first`'s rounds; a row at each checkpoint."""
    rows: list[dict[str, float]] = []
    times: list[float] = []
    last_round, last_served = 0, _served(admin)
    pending = list(checkpoints)
    while pending:
        name, r, seconds = queue.get(timeout=600)
        if name != first:
            continue
        times.append(seconds)
        if r < pending[0]:
            continue
        served = _served(admin)
        done = r - last_round
        rows.append({
            "round": r,
            "msgs": (served[0] - last_served[0]) / done,
            "kb": (served[1] - last_served[1]) / done / 1024,
            "round_s": statistics.median(times),
            "peers_mb": sum(rss_mb(w.pid) for w in workers),
            "ledger_mb": rss_mb(ledger_pid),
        })  # fmt: skip
        last_round, last_served, times = r, served, []
        pending.pop(0)
    return rows


def _served(admin: Any) -> tuple[int, int]:
    """Messages and bytes the ledger has sent, all methods but `Status` (ours)."""
    served = admin.status()["served"]
    kept = [v for method, v in served.items() if method != "Status"]
    return sum(v["messages"] for v in kept), sum(v["bytes"] for v in kept)


if __name__ == "__main__":
    sys.exit(main())
