"""The dashboard's costs: how soon a page hears of a ledger change (server push), and what a
long chain costs it (indexing, memory, search, a contract's curves).

Usage (from the repository root):

    python benchmarks/dashboard_bench.py [--changes 20] [--blocks 100000] [--sites 10]

Push: an admin creates contracts a second apart; each is timed from the transaction's
submission to the Swarm page's server-sent event that lists it, beside the commit alone
(submit returns once the ledger applied it). The difference is what the dashboard adds:
following the ledger's block stream, reading the state and blocks, and the push. Chain:
synthetic `metrics` blocks of SITES sites, indexed as the dashboard indexes a real chain.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from openswarm.ledger.local import LocalLedger
from openswarm.ui.chain import ChainIndex
from openswarm.ui.launch import start_dashboard
from openswarm.ui.views import thinned


def _events(port: int, seen: dict[str, float], stop: threading.Event) -> None:
    """Read the Swarm page's event stream; note when each contract first appears."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/events?page=swarm", headers={"Host": f"127.0.0.1:{port}"})
    answer = connection.getresponse()
    for raw in answer:
        if stop.is_set():
            break
        line = raw.decode()
        if line.startswith("data: "):
            now = time.perf_counter()
            for row in json.loads(line[6:])["contracts"]:
                seen.setdefault(row["contract"], now)
    connection.close()


def push_latency(changes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = LocalLedger.create(Path(tmp) / "ledger", peers=["site-1"])
        ledger.start()
        ledger.wait_ready()
        client = ledger.client("admin")
        running = start_dashboard(client, "127.0.0.1:0", experiments=Path(tmp) / "e.json")
        seen: dict[str, float] = {}
        stop = threading.Event()
        reader = threading.Thread(target=_events, args=(running.port, seen, stop), daemon=True)
        reader.start()
        time.sleep(1.0)
        commits, shown = [], []
        try:
            for index in range(changes):
                name = f"bench-{index}"
                started = time.perf_counter()
                client.submit("contract_create", contract=name, payload={"min_peers": 1})
                commits.append(time.perf_counter() - started)
                deadline = time.monotonic() + 10
                while name not in seen and time.monotonic() < deadline:
                    time.sleep(0.002)
                shown.append(seen[name] - started)
                time.sleep(1.0)  # changes a second apart, as a training swarm makes them
        finally:
            stop.set()
            running.close()
            client.close()
            ledger.close()
    return {
        "commit_median_s": statistics.median(commits),
        "shown_median_s": statistics.median(shown),
        "shown_max_s": max(shown),
    }


def _metrics_block(height: int, round: int, site: str) -> dict[str, Any]:
    report = {"loss": 1.0 / round, "metric": 1 - 1.0 / round, "epoch": round // 10,
              "total_epochs": 100}  # fmt: skip
    tx = {"type": "metrics", "contract": "bench", "round": round, "sender": site,
          "timestamp": 1.7e9 + height, "payload": report}  # fmt: skip
    event = {"kind": "metrics", "round": round, "member": site, **report}
    return {"height": height, "hash": f"{height:064x}", "tx": tx, "tx_id": f"{height:064x}",
            "outcome": {"status": "applied", "result": {"events": [event]}}}  # fmt: skip


def chain_costs(blocks: int, sites: int) -> dict[str, float]:
    names = [f"site-{i + 1}" for i in range(sites)]
    chain = [{"height": 0, "hash": "0" * 64, "genesis": {}}]
    chain += [_metrics_block(h, 1 + (h - 1) // sites, names[(h - 1) % sites])
              for h in range(1, blocks + 1)]  # fmt: skip
    tracemalloc.start()
    started = time.perf_counter()
    index = ChainIndex()
    for start in range(0, len(chain), 500):
        index.add(chain[start : start + 500])
    indexing = time.perf_counter() - started
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    started = time.perf_counter()
    hits = index.search(kind="metrics", round=blocks // sites // 2, limit=200)
    search = time.perf_counter() - started
    started = time.perf_counter()
    curves = json.dumps(thinned(index.runs["bench"].series()))
    series = time.perf_counter() - started
    started = time.perf_counter()
    json.dumps(thinned(index.runs["bench"].series()))  # the next push: no new reports
    again = time.perf_counter() - started
    assert len(hits) == sites
    return {
        "blocks_per_s": blocks / indexing,
        "bytes_per_block": memory / blocks,
        "search_s": search,
        "curves_s": series,
        "curves_again_s": again,
        "curves_mb": len(curves) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=10)
    args = parser.parse_args()
    push = push_latency(args.changes)
    print(f"push: a ledger change reaches an open page {push['shown_median_s']:.3f} s after its "
          f"submission (median; max {push['shown_max_s']:.3f} s); the commit alone takes "
          f"{push['commit_median_s']:.3f} s, so the dashboard adds "
          f"{push['shown_median_s'] - push['commit_median_s']:.3f} s "
          f"({push['shown_median_s'] / push['commit_median_s']:.1f}x the commit)")  # fmt: skip
    chain = chain_costs(args.blocks, args.sites)
    rounds = args.blocks // args.sites
    print(f"chain of {args.blocks} blocks ({rounds} rounds x {args.sites} sites): indexed at "
          f"{chain['blocks_per_s']:,.0f} blocks/s, {chain['bytes_per_block']:.0f} bytes each "
          f"in memory; a search by type and round {1000 * chain['search_s']:.1f} ms; the "
          f"contract's curves (at most 1,000 points a site) {1000 * chain['curves_s']:.1f} ms "
          f"(then {1000 * chain['curves_again_s']:.1f} ms until a new report), "
          f"{chain['curves_mb']:.2f} MB of JSON per push")  # fmt: skip


if __name__ == "__main__":
    main()
