"""Run N copies of a training script as a local swarm, around an embedded ledger.

`run_swarm` creates a run folder, starts a one-replica ledger with identities site-1..site-N,
starts one process per peer (its own process group, its own log, data shard, rank and swarm
settings in its environment), reports progress from the ledger while they train, and stops
everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openswarm import DEFAULT_CONTRACT
from openswarm.launch.progress import LedgerWatch, SwarmProgress, build_progress
from openswarm.ledger.client import LedgerError
from openswarm.ledger.local import LocalLedger

ProgressFn = Callable[[SwarmProgress], None]


class LaunchError(ValueError):
    """The swarm cannot be launched as asked; the message names the cause."""


#: Variables that bound the threads of torch, TensorFlow, numpy's BLAS and friends.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
)  # fmt: skip


@dataclass(frozen=True)
class PeerSpec:
    """One peer process to start: its name, rank, environment and files."""

    name: str
    rank: int
    data_dir: Path | None
    log_path: Path
    result_path: Path
    env: Mapping[str, str]
    workdir: Path  # its own working directory, as HPE gives each node


@dataclass(frozen=True)
class PeerOutcome:
    """How one peer ended."""

    name: str
    rank: int
    exit_code: int | None
    log_path: Path
    result: dict[str, Any] | None
    last_round: int | None
    final_digest: str | None


@dataclass
class SwarmRunResult:
    """What a local swarm run gave."""

    run_dir: Path
    ledger_dir: Path
    peers: list[PeerOutcome] = field(default_factory=list)
    rounds: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    error: str | None = None
    #: The ledger, still serving, when the run was asked to keep it (the caller closes it).
    ledger: LocalLedger | None = None

    @property
    def exit_codes(self) -> dict[str, int | None]:
        return {p.name: p.exit_code for p in self.peers}

    @property
    def results(self) -> dict[str, dict[str, Any] | None]:
        return {p.name: p.result for p in self.peers}

    @property
    def final_digests(self) -> dict[str, str | None]:
        return {p.name: p.final_digest for p in self.peers}

    @property
    def ok(self) -> bool:
        """True when nothing interrupted the run and every peer exited 0."""
        return (
            not self.interrupted
            and self.error is None
            and bool(self.peers)
            and all(p.exit_code == 0 for p in self.peers)
        )


def peer_names(peers: int) -> list[str]:
    return [f"site-{i}" for i in range(1, peers + 1)]


def default_run_dir(base: Path = Path("runs")) -> Path:
    """`./runs/run-YYYYmmdd-HHMMSS` (with a suffix when that exists already)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = base / f"run-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"run-{stamp}-{n}"
    return path


def resolve_data_dirs(data_dirs: Sequence[Path | str], peers: int) -> list[Path | None]:
    """0 dirs → none; 1 → the same for every peer; N → one each; else a LaunchError."""
    if peers < 1:
        raise LaunchError(f"--peers must be at least 1, got {peers}")
    dirs = [Path(d).expanduser().resolve() for d in data_dirs]
    for d in dirs:
        if not d.is_dir():
            raise LaunchError(f"data dir {d} does not exist or is not a folder")
    if not dirs:
        return [None] * peers
    if len(dirs) == 1:
        return dirs * peers
    if len(dirs) == peers:
        return list(dirs)
    raise LaunchError(
        f"--data-dir given {len(dirs)} times for {peers} peers: give it once (shared by all) "
        f"or once per peer ({peers} times)"
    )


def command_for(script: str, script_args: Sequence[str], *, module: bool) -> list[str]:
    """`python SCRIPT ARGS…` (or `python -m MODULE ARGS…`); checks that the script exists."""
    if module:
        if not script or script.startswith("-"):
            raise LaunchError(f"not a module name: {script!r}")
        return [sys.executable, "-m", script, *script_args]
    path = Path(script).expanduser()
    if not path.is_file():
        raise LaunchError(f"training script {script} not found")
    return [sys.executable, str(path.resolve()), *script_args]


def peer_specs(
    ledger: LocalLedger,
    run_dir: Path,
    data_dirs: Sequence[Path | None],
    *,
    contract: str,
    min_peers: int,
    epochs: int | None,
    threads_per_peer: int | None = None,
) -> list[PeerSpec]:
    """Folders and environment of each peer: HPE's variables (`DATA_DIR`, `SCRATCH_DIR`,
    `MODEL_DIR`, `MAX_EPOCHS`, `MIN_PEERS`, `NODE_ID`: 1, 2, …), its own working directory
    (RUN_DIR/NAME) and a share of the machine's cores for its math libraries' threads."""
    names = peer_names(len(data_dirs))
    threads = threads_per_peer or max(1, (os.cpu_count() or 1) // max(1, len(names)))
    specs = []
    for rank, (name, data_dir) in enumerate(zip(names, data_dirs, strict=True)):
        site_dir = run_dir / name
        scratch, model = site_dir / "scratch", site_dir / "model"
        scratch.mkdir(parents=True, exist_ok=True)
        model.mkdir(parents=True, exist_ok=True)
        result_path = site_dir / "result.json"
        env = {
            "OPENSWARM_LEDGER": ",".join(ledger.endpoints),
            "OPENSWARM_IDENTITY": str(ledger.identity_dir(name)),
            # A local run's sites may create their training contract (one operator owns all).
            "OPENSWARM_ADMIN_IDENTITY": str(ledger.identity_dir("admin")),
            "OPENSWARM_LISTEN": "127.0.0.1:0",
            "OPENSWARM_CONTRACT": contract,
            "OPENSWARM_MIN_PEERS": str(min_peers),
            "MIN_PEERS": str(min_peers),
            "OPENSWARM_PEER_NAME": name,
            "OPENSWARM_RANK": str(rank),
            "OPENSWARM_PEERS": str(len(names)),
            "OPENSWARM_RESULT": str(result_path),
            "SCRATCH_DIR": str(scratch),
            "MODEL_DIR": str(model),
            "NODE_ID": str(rank + 1),
            "PYTHONUNBUFFERED": "1",
            # `python -m MODULE` still finds modules of the folder the run started from
            "PYTHONPATH": os.pathsep.join(
                p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        for variable in THREAD_VARIABLES:  # a value the user set wins
            env[variable] = os.environ.get(variable) or str(threads)
        if data_dir is not None:
            env["OPENSWARM_DATA_DIR"] = env["DATA_DIR"] = str(data_dir)
        if epochs is not None:
            env["MAX_EPOCHS"] = str(epochs)
        specs.append(
            PeerSpec(name, rank, data_dir, run_dir / f"{name}.log", result_path, env, site_dir)
        )
    return specs


def run_swarm(
    script: str | Path,
    peers: int,
    *,
    data_dirs: Sequence[Path | str] = (),
    script_args: Sequence[str] = (),
    workdir: Path | None = None,
    min_peers: int | None = None,
    contract: str = DEFAULT_CONTRACT,
    epochs: int | None = None,
    module: bool = False,
    threads_per_peer: int | None = None,
    on_progress: ProgressFn | None = None,
    poll_s: float = 1.0,
    stop_grace_s: float = 5.0,
    on_ledger: Callable[[LocalLedger], None] | None = None,
    keep_ledger: bool = False,
) -> SwarmRunResult:
    """Run `peers` copies of `script` as a swarm; returns when all have exited.

    Raises LaunchError for bad input before anything starts. Ctrl-C or SIGTERM stops every
    peer and the ledger and returns a result with `interrupted=True`. Each peer runs in its
    own folder RUN_DIR/NAME; `threads_per_peer` (default: the cores divided among the peers)
    bounds its math libraries' threads unless OMP_NUM_THREADS and friends are set.
    `on_ledger` is called with the ledger once it serves (before any peer starts); with
    `keep_ledger` the ledger still serves when this returns (`result.ledger`: close it).
    """
    dirs = resolve_data_dirs(data_dirs, peers)
    command = command_for(str(script), script_args, module=module)
    min_peers = peers if min_peers is None else min_peers
    if not 1 <= min_peers <= peers:
        raise LaunchError(f"--min-peers must be between 1 and {peers}, got {min_peers}")
    if epochs is not None and epochs < 1:
        raise LaunchError(f"--epochs must be at least 1, got {epochs}")
    if threads_per_peer is not None and threads_per_peer < 1:
        raise LaunchError(f"--threads-per-peer must be at least 1, got {threads_per_peer}")
    run_dir = (workdir or default_run_dir()).expanduser().resolve()
    if (run_dir / "ledger").exists():
        raise LaunchError(f"{run_dir} already holds a run; choose another --workdir")
    run_dir.mkdir(parents=True, exist_ok=True)
    result = SwarmRunResult(run_dir=run_dir, ledger_dir=run_dir / "ledger")
    started = time.monotonic()
    with _stop_on_sigterm():
        run = _Run(result, command, dirs, contract, min_peers, epochs, started)
        run.threads_per_peer = threads_per_peer
        run.on_ledger, run.keep_ledger = on_ledger, keep_ledger
        run.execute(on_progress, poll_s, stop_grace_s)
    result.seconds = time.monotonic() - started
    return result


class _Run:
    """The processes of one run and their clean-up."""

    def __init__(
        self,
        result: SwarmRunResult,
        command: list[str],
        data_dirs: list[Path | None],
        contract: str,
        min_peers: int,
        epochs: int | None,
        started: float,
    ) -> None:
        self.result = result
        self.command = command
        self.data_dirs = data_dirs
        self.contract = contract
        self.min_peers = min_peers
        self.epochs = epochs
        self.started = started
        self.ledger: LocalLedger | None = None
        self.specs: list[PeerSpec] = []
        self.threads_per_peer: int | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.state: dict[str, Any] | None = None
        self.on_ledger: Callable[[LocalLedger], None] | None = None
        self.keep_ledger = False

    def execute(self, on_progress: ProgressFn | None, poll_s: float, grace_s: float) -> None:
        ended = False  # the run came to its end (not an interrupt, not an error raised here)
        try:
            self._start()
            self._watch(on_progress, poll_s, grace_s)
            ended = True
        except _Abort:
            ended = True
        except KeyboardInterrupt:
            self.result.interrupted = True
        finally:
            with _deferred_interrupts():
                self._stop_peers(grace_s)
                self._collect()
                if self.ledger is not None and self.keep_ledger and ended:
                    self.result.ledger = self.ledger
                elif self.ledger is not None:
                    self.ledger.close()

    def _start(self) -> None:
        names = peer_names(len(self.data_dirs))
        self.ledger = LocalLedger.create(self.result.ledger_dir, replicas=1, peers=names)
        try:
            self.ledger.start()
            self.ledger.wait_ready()
        except LedgerError as exc:
            self.result.error = f"the ledger did not start: {exc}"
            raise _Abort from exc
        if self.on_ledger is not None:
            self.on_ledger(self.ledger)
        self.specs = peer_specs(
            self.ledger, self.result.run_dir, self.data_dirs,
            contract=self.contract, min_peers=self.min_peers, epochs=self.epochs,
            threads_per_peer=self.threads_per_peer,
        )  # fmt: skip
        for spec in self.specs:
            with open(spec.log_path, "wb") as log:
                self.procs[spec.name] = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **spec.env},
                    cwd=spec.workdir,
                    start_new_session=True,
                )

    def _watch(self, on_progress: ProgressFn | None, poll_s: float, grace_s: float) -> None:
        assert self.ledger is not None
        with self.ledger.client("admin", timeout_s=2.0) as client, _interrupts_as_flag() as stop:
            watch = LedgerWatch(client, self.contract)
            next_poll = 0.0
            while True:
                if stop.is_set():  # raised here, never from inside a gRPC call
                    raise KeyboardInterrupt
                codes = self._exit_codes()
                running = [n for n, c in codes.items() if c is None]
                if time.monotonic() >= next_poll or not running:
                    next_poll = time.monotonic() + poll_s
                    self.state = watch.poll() or self.state
                    if on_progress is not None:
                        elapsed = time.monotonic() - self.started
                        on_progress(build_progress(self.state, codes, elapsed))
                if not running:
                    return
                if not self.ledger.replicas[0].running:
                    self.result.error = "the ledger process exited; stopping the peers"
                    return
                failed = [n for n, c in codes.items() if c not in (None, 0)]
                if failed and len(running) < self.min_peers:
                    self.result.error = (
                        f"{', '.join(failed)} failed and the {len(running)} peers left cannot "
                        f"reach min_peers={self.min_peers}; stopping them"
                    )
                    return
                time.sleep(min(0.1, poll_s))

    def _exit_codes(self) -> dict[str, int | None]:
        return {name: proc.poll() for name, proc in self.procs.items()}

    def _stop_peers(self, grace_s: float) -> None:
        live = [p for p in self.procs.values() if p.poll() is None]
        for proc in live:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)  # leftovers the peer itself started

    def _collect(self) -> None:
        history = (self.state or {}).get("history") or []
        merged = [h for h in history if h.get("digest")]
        latest = (self.state or {}).get("latest_merged") or {}
        self.result.rounds = len(merged)
        for spec in self.specs:
            proc = self.procs.get(spec.name)
            record = _read_result(spec.result_path)
            rounds = [h["round"] for h in merged if spec.name in h.get("participants", ())]
            code = None if proc is None else proc.returncode
            digest = (record or {}).get("final_digest")
            if digest is None and code == 0:
                digest = latest.get("digest")
            self.result.peers.append(
                PeerOutcome(
                    name=spec.name,
                    rank=spec.rank,
                    exit_code=code,
                    log_path=spec.log_path,
                    result=record,
                    last_round=max(rounds) if rounds else None,
                    final_digest=digest,
                )
            )


class _Abort(Exception):
    """Ends a run early after recording the reason in the result."""


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def _interrupts_as_flag() -> Iterator[threading.Event]:
    """Within: Ctrl-C and SIGTERM set the yielded event instead of raising wherever the main
    thread happens to be (inside a gRPC call, an exception can wedge the channel)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    handler = lambda signum, frame: stop.set()  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Within: SIGTERM acts like Ctrl-C (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _deferred_interrupts() -> Iterator[None]:
    """Within: a second Ctrl-C/SIGTERM does not cut the clean-up short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
