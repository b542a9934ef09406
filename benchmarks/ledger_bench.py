"""Throughput and commit latency of the permissioned ledger on loopback.

Measures committed transactions per second and p50/p90/p99/max commit latency (from the
client's `submit_tx` call to its committed outcome) for networks of 1 and 3 replicas, each
a real `openswarm ledger start` process (Raft + gRPC over mTLS), driven by 16 concurrent
submitters. Every submitter has its own identity and `LedgerClient`, registers once (not
timed), then sends `metrics` contract calls in a closed loop: it signs each transaction
inside the loop, as real clients do, and the signing cost is reported separately (isolated
and as measured in the loop). The first second is warm-up and is not counted; any rejected
transaction or RPC error aborts the run.

The submitters run as worker processes (default 4 processes x 4 threads) so that the
client's GIL cannot add to the measured latency. Measured on the 2-core machine, 16 threads
in one process (`--processes 0`) gave the same figures within noise and used under half a
core, so the client is not the bottleneck either way. CPU use of each replica and of the
clients over the measured window, and the load average, are printed to show which side is
saturated and whether other work on the machine skewed the run. `--prefer-leader` (a
diagnostic) lists the Raft leader's endpoint first; `LedgerClient` itself moves to the
leader once a follower has answered for it.

Target: with 3 replicas, >= 200 committed tx/s and p99 < 100 ms.

Run:
    .venv/bin/python benchmarks/ledger_bench.py [--replicas 1 3] [--seconds 10]
        [--submitters 16] [--processes 4] [--count N] [--prefer-leader] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.tx import make_transaction
from openswarm.pki import Identity

TARGET_REPLICAS = 3
TARGET_TPS = 200.0
TARGET_P99_MS = 100.0
TOTAL_EPOCHS = 1_000_000
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Plan:
    """What every submitter needs to know (picklable for worker processes)."""

    endpoints: tuple[str, ...]
    pki_dir: str
    warmup_s: float
    seconds: float
    count: int | None


@dataclass
class Samples:
    """Measurements of one submitter thread, or a worker's merged threads."""

    latencies_ms: list[float] = field(default_factory=list)
    sign_ms: list[float] = field(default_factory=list)
    last_end: float = 0.0
    cpu_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: Samples) -> None:
        self.latencies_ms += other.latencies_ms
        self.sign_ms += other.sign_ms
        self.last_end = max(self.last_end, other.last_end)
        self.cpu_s += other.cpu_s
        self.errors += other.errors


@dataclass
class Result:
    replicas: int
    submitters: int
    processes: int
    committed: int
    seconds: float
    tx_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    sign_ms_in_loop: float
    sign_ms_isolated: float
    replica_cpu_pct: list[float]
    client_cpu_pct: float
    leader: int
    prefer_leader: bool
    load_before: float
    load_after: float


# --- submitters ------------------------------------------------------------------------------


def _payload(epoch: int) -> dict[str, Any]:
    return {
        "loss": 1.0 / (epoch + 1),
        "metric": 0.5,
        "epoch": epoch,
        "total_epochs": TOTAL_EPOCHS,
    }


def _submit_loop(client: LedgerClient, start: float, plan: Plan, out: Samples) -> None:
    """Closed loop of signed `metrics` calls; records those committed in the window."""
    warm_end = start + plan.warmup_s
    end = warm_end + plan.seconds
    identity = client.identity
    epoch = 0
    measured = 0
    try:
        while True:
            now = time.monotonic()
            if plan.count is None and now >= end:
                break
            if plan.count is not None and measured >= plan.count:
                break
            t_sign = time.monotonic()
            tx = make_transaction(
                identity, "metrics", contract=DEFAULT_CONTRACT, round=1, payload=_payload(epoch)
            )
            t_submit = time.monotonic()
            outcome = client.submit_tx(tx)
            t_done = time.monotonic()
            if not outcome.applied:
                raise LedgerError(f"tx {outcome.tx_id} rejected: {outcome.reason}")
            epoch = (epoch + 1) % TOTAL_EPOCHS
            in_window = t_done >= warm_end if plan.count is not None else warm_end <= t_done < end
            if plan.count is not None and t_submit < warm_end:
                in_window = False
            if in_window:
                measured += 1
                out.latencies_ms.append((t_done - t_submit) * 1e3)
                out.sign_ms.append((t_submit - t_sign) * 1e3)
                out.last_end = max(out.last_end, t_done)
    except Exception as exc:  # reported by the parent, which fails the run
        out.errors.append(f"{identity.name}: {type(exc).__name__}: {exc}")


def _run_threads(
    plan: Plan, names: Sequence[str], ready: MpEvent | None, go: MpEvent | None, start_at: Any
) -> Samples:
    """Submitter threads of one process; returns their merged samples."""
    pki = Path(plan.pki_dir)
    clients = [
        LedgerClient(list(plan.endpoints), Identity.load(pki / "identities" / name))
        for name in names
    ]
    for client in clients:
        client.status()  # open the mTLS channel before the clock starts
    if ready is not None and go is not None:
        ready.set()
        go.wait()
    start = float(start_at.value)
    outs = [Samples() for _ in clients]
    threads = [
        threading.Thread(target=_submit_loop, args=(c, start, plan, o), daemon=True)
        for c, o in zip(clients, outs, strict=True)
    ]
    for thread in threads:
        thread.start()
    _sleep_until(start + plan.warmup_s)
    cpu0 = time.process_time()
    for thread in threads:
        thread.join()
    merged = Samples(cpu_s=time.process_time() - cpu0)
    for out in outs:
        merged.merge(out)
    for client in clients:
        client.close()
    return merged


def _worker(
    plan: Plan,
    names: list[str],
    ready: MpEvent | None,
    go: MpEvent | None,
    start_at: Any,
    results: Any,
) -> None:
    """Runs in a submitter process (or, with `--processes 0`, a thread of this one)."""
    try:
        results.put(_run_threads(plan, names, ready, go, start_at))
    except BaseException as exc:
        if ready is not None:
            ready.set()
        results.put(Samples(errors=[f"worker {names}: {type(exc).__name__}: {exc}"]))


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# --- one network -----------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def sign_cost_ms(identity: Identity, n: int = 300) -> float:
    """Mean time to build and sign one `metrics` transaction, in one uncontended thread."""
    t0 = time.perf_counter()
    for epoch in range(n):
        make_transaction(
            identity, "metrics", contract=DEFAULT_CONTRACT, round=1, payload=_payload(epoch)
        )
    return (time.perf_counter() - t0) * 1e3 / n


def run_network(
    replicas: int,
    *,
    submitters: int,
    processes: int,
    seconds: float,
    warmup_s: float,
    count: int | None,
    prefer_leader: bool = False,
) -> Result:
    names = [f"s{i:02d}" for i in range(1, submitters + 1)]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"ledger-bench-{replicas}-") as tmp:
        net = LocalLedger.create(Path(tmp), replicas=replicas, peers=names, contract_settings={})
        try:
            net.start()
            leader_raft = net.wait_for_leader()
            leader = [r.raft_address for r in net.replicas].index(leader_raft)
            for name in names:  # registration is set-up, not measured
                with net.client(name) as client:
                    client.submit(
                        "register", contract=DEFAULT_CONTRACT, payload={"endpoint": "127.0.0.1:9"}
                    ).raise_for_status()
            isolated = sign_cost_ms(net.identity(names[0]))
            endpoints = list(net.endpoints)
            if prefer_leader:  # diagnostic: the client itself always tries replica 1 first
                endpoints.insert(0, endpoints.pop(leader))
            plan = Plan(tuple(endpoints), str(net.pki_dir), warmup_s, seconds, count)
            pids = [r.process.pid for r in net.replicas if r.process is not None]
            samples, window, replica_cpu = _drive(plan, names, processes, pids)
            load_after = os.getloadavg()[0]
        finally:
            net.close()
    if samples.errors:
        raise SystemExit(
            f"FAILED with {replicas} replica(s): {len(samples.errors)} submitter error(s); "
            f"first: {samples.errors[0]}"
        )
    lat = sorted(samples.latencies_ms)
    return Result(
        replicas=replicas,
        submitters=submitters,
        processes=processes,
        committed=len(lat),
        seconds=window,
        tx_per_s=len(lat) / window if window > 0 else 0.0,
        p50_ms=_percentile(lat, 50),
        p90_ms=_percentile(lat, 90),
        p99_ms=_percentile(lat, 99),
        max_ms=lat[-1] if lat else float("nan"),
        mean_ms=statistics.fmean(lat) if lat else float("nan"),
        sign_ms_in_loop=statistics.fmean(samples.sign_ms) if samples.sign_ms else float("nan"),
        sign_ms_isolated=isolated,
        replica_cpu_pct=[100.0 * c / window for c in replica_cpu],
        client_cpu_pct=100.0 * samples.cpu_s / window,
        leader=leader + 1,
        prefer_leader=prefer_leader,
        load_before=load_before,
        load_after=load_after,
    )


def _drive(
    plan: Plan, names: list[str], processes: int, replica_pids: list[int]
) -> tuple[Samples, float, list[float]]:
    """Run the submitters; returns merged samples, window seconds, replica CPU seconds."""
    ctx = mp.get_context("spawn")  # never fork a process that already runs gRPC
    start_at = ctx.Value("d", 0.0)
    samples = Samples()
    workers: list[Any] = []
    pool: threading.Thread | None = None
    results: Any = ctx.Queue()
    go = ctx.Event()
    if processes <= 0:
        pool = threading.Thread(target=_worker, args=(plan, names, None, None, start_at, results))
    else:
        groups = [names[i::processes] for i in range(processes)]
        readies = []
        for group in groups:
            ready = ctx.Event()
            proc = ctx.Process(
                target=_worker, args=(plan, group, ready, go, start_at, results), daemon=True
            )
            proc.start()
            workers.append(proc)
            readies.append(ready)
        for ready in readies:
            if not ready.wait(120):
                raise SystemExit("a submitter process did not get ready within 120 s")
    start = time.monotonic() + 0.2
    start_at.value = start
    if pool is not None:
        pool.start()
    else:
        go.set()
    warm_end = start + plan.warmup_s
    _sleep_until(warm_end)
    cpu0 = [_cpu_seconds(pid) for pid in replica_pids]
    if plan.count is None:
        _sleep_until(warm_end + plan.seconds)
        cpu1 = [_cpu_seconds(pid) for pid in replica_pids]
    for _ in workers or [pool]:
        samples.merge(results.get(timeout=plan.seconds + 600))
    for proc in workers:
        proc.join(30)
    if pool is not None:
        pool.join()
    if plan.count is not None:
        cpu1 = [_cpu_seconds(pid) for pid in replica_pids]
        window = max(samples.last_end - warm_end, 1e-9)
    else:
        window = plan.seconds
    return samples, window, [b - a for a, b in zip(cpu0, cpu1, strict=True)]


# --- report ----------------------------------------------------------------------------------


def print_table(results: Sequence[Result]) -> None:
    header = (
        f"{'replicas':>8} {'submitters':>10} {'committed':>9} {'seconds':>7} {'tx/s':>8} "
        f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}  "
        f"{'sign ms (iso/loop)':>18}  cpu% replicas (*leader) | client"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        cpu = " ".join(
            f"{c:.0f}{'*' if i == r.leader else ''}"
            for i, c in enumerate(r.replica_cpu_pct, start=1)
        )
        print(
            f"{r.replicas:>8} {r.submitters:>10} {r.committed:>9} {r.seconds:>7.1f} "
            f"{r.tx_per_s:>8.1f} {r.p50_ms:>7.1f} {r.p90_ms:>7.1f} {r.p99_ms:>7.1f} "
            f"{r.max_ms:>7.1f}  {r.sign_ms_isolated:>8.2f}/{r.sign_ms_in_loop:<9.2f}  "
            f"{cpu} | {r.client_cpu_pct:.0f}"
        )

    loads = ", ".join(f"{r.load_before:.1f}->{r.load_after:.1f}" for r in results)
    print(
        f"1-min load average before->after each run: {loads} on {os.cpu_count()} CPUs "
        "(the run's own processes included; more means other work skewed the figures)"
    )


def verdict(results: Sequence[Result]) -> bool | None:
    """Print and return PASS/FAIL for the target network, or None if it was not run."""
    target = [r for r in results if r.replicas == TARGET_REPLICAS]
    if not target:
        print(f"target: not checked (no run with {TARGET_REPLICAS} replicas)")
        return None
    r = target[-1]
    ok = r.tx_per_s >= TARGET_TPS and r.p99_ms < TARGET_P99_MS
    print(
        f"target ({TARGET_REPLICAS} replicas): >= {TARGET_TPS:.0f} tx/s and p99 < "
        f"{TARGET_P99_MS:.0f} ms -> {r.tx_per_s:.1f} tx/s, p99 {r.p99_ms:.1f} ms: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--submitters", type=int, default=16)
    parser.add_argument(
        "--processes", type=int, default=4, help="submitter processes (0: threads of this one)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds, not counted")
    parser.add_argument(
        "--count", type=int, default=None, help="measured tx per submitter (instead of --seconds)"
    )
    parser.add_argument(
        "--prefer-leader",
        action="store_true",
        help="diagnostic: list the Raft leader's endpoint first to the clients",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    processes = min(args.processes, args.submitters)

    results = []
    for replicas in args.replicas:
        print(
            f"running {replicas} replica(s), {args.submitters} submitters in "
            f"{processes or 'this'} process(es) ...",
            file=sys.stderr,
            flush=True,
        )
        results.append(
            run_network(
                replicas,
                submitters=args.submitters,
                processes=processes,
                seconds=args.seconds,
                warmup_s=args.warmup,
                count=args.count,
                prefer_leader=args.prefer_leader,
            )
        )
    print_table(results)
    ok = verdict(results)
    if args.json is not None:
        report = {
            "target": {
                "replicas": TARGET_REPLICAS,
                "min_tx_per_s": TARGET_TPS,
                "max_p99_ms": TARGET_P99_MS,
                "pass": ok,
            },
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
