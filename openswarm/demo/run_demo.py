"""`openswarm demo`: three sites with skewed MNIST shards, alone, as a swarm, and pooled."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openswarm import DEFAULT_CONTRACT
from openswarm.demo.train import DEFAULT_EPOCHS, DEFAULT_SYNC_FREQUENCY
from openswarm.launch.launcher import LaunchError, SwarmRunResult, run_swarm
from openswarm.launch.progress import ProgressPrinter, format_summary
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.store import StoreError
from openswarm.protocol import SwarmError

Echo = Callable[[str], None]


class DemoFailed(RuntimeError):
    """The swarm part of the demo did not complete; `run` holds what the launcher saw."""

    def __init__(self, message: str, run: SwarmRunResult) -> None:
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class PeerReport:
    name: str
    local_accuracy: float
    swarm_accuracy: float | None
    final_digest: str | None
    epsilon: float | None = None  # ε spent, with --dp


@dataclass(frozen=True)
class DemoReport:
    """Everything the demo prints, in the shape of its JSON."""

    peers: list[PeerReport]
    centralized_accuracy: float
    rounds: int
    seconds: float
    ledger_dir: Path
    compression: str = "none"
    received_mb: float | None = None  # models all sites received over the run
    topology: str = "leader"  # who merged: the leader, or every site a shard
    training: Mapping[str, Any] = field(default_factory=dict)  # merge and drift options, seed

    def to_json(self) -> dict[str, Any]:
        return {
            "peers": [
                {
                    "name": p.name,
                    "local_accuracy": _round(p.local_accuracy),
                    "swarm_accuracy": _round(p.swarm_accuracy),
                    "final_digest": p.final_digest,
                    **({} if p.epsilon is None else {"epsilon": _round(p.epsilon)}),
                }
                for p in self.peers
            ],
            "centralized_accuracy": _round(self.centralized_accuracy),
            "rounds": self.rounds,
            "seconds": round(self.seconds, 1),
            "ledger_dir": str(self.ledger_dir),
            "compression": self.compression,
            "topology": self.topology,
            "received_mb": None if self.received_mb is None else round(self.received_mb, 2),
            "training": dict(self.training),
        }


@dataclass(frozen=True)
class DemoTraining:
    """How the demo's swarm trains beyond the plain demo: the merge method (and its
    options), FedProx's mu, SCAFFOLD's control variates, and the seed of the data split,
    the initial weights and the shuffling (the same budget whatever is chosen)."""

    merge: str = "mean"
    merge_options: Mapping[str, Any] = field(default_factory=dict)
    proximal_mu: float = 0.0
    control_variates: bool = False
    seed: int = 0
    dp_epsilon: float | None = None  # differential privacy: each site's ε budget (δ=1e-5)
    dp_mode: str = "sgd"  # "sgd" (DP-SGD, per record) or "site" (noised updates, per site)
    secure_aggregation: bool = False  # masked updates: the merger learns only their sum

    def check(self, compression: str | None, topology: str | None) -> None:
        """SwarmError (before anything trains) if these options do not go together."""
        from openswarm.client.drift import Drift
        from openswarm.node.settings import SwarmSettings

        if not isinstance(self.seed, int) or not 0 <= self.seed < 10_000:
            raise SwarmError(f"--seed must be an integer from 0 to 9999, got {self.seed!r}")
        SwarmSettings(merge_method=self.merge, merge_options=dict(self.merge_options),
                      compression=compression, merge_topology=topology)  # fmt: skip
        if self.secure_aggregation:
            from openswarm.ledger.contract import ContractError, ContractSettings

            try:
                ContractSettings(merge_method=self.merge, merge_options=self.merge_options,
                                 merge_topology=topology or "leader", secure_aggregation=True,
                                 min_peers=2)  # fmt: skip
            except ContractError as exc:
                raise SwarmError(f"--secure-aggregation: {exc}") from None
        Drift(proximal_mu=self.proximal_mu, control_variates=self.control_variates,
              local_lr=1.0, merge_method=self.merge)  # fmt: skip
        if self.dp_epsilon is not None:
            from openswarm.privacy import PrivacyBudget, PrivacyError

            PrivacyBudget(self.dp_mode, epsilon=self.dp_epsilon, noise=1.0)
            if self.control_variates:
                raise PrivacyError("--dp cannot run with --control-variates: the variates "
                                   "would leave the site without noise")  # fmt: skip

    def script_args(self) -> list[str]:
        """The options of openswarm.demo.train that say the same."""
        args = ["--merge", self.merge, "--seed", str(self.seed)]
        if self.merge_options:
            args += ["--merge-options", json.dumps(dict(self.merge_options))]
        if self.proximal_mu:
            args += ["--proximal-mu", repr(float(self.proximal_mu))]
        if self.control_variates:
            args.append("--control-variates")
        if self.dp_epsilon is not None:
            args += ["--dp", repr(float(self.dp_epsilon)), "--dp-mode", self.dp_mode]
        if self.secure_aggregation:
            args.append("--secure-aggregation")
        return args

    def describe(self) -> str:
        options = ", ".join(f"{k}={v:g}" for k, v in sorted(self.merge_options.items()))
        parts = [f"merge {self.merge}" + (f" ({options})" if options else "")]
        if self.proximal_mu:
            parts.append(f"FedProx mu={self.proximal_mu:g}")
        if self.control_variates:
            parts.append("SCAFFOLD control variates")
        if self.dp_epsilon is not None:
            unit = "record" if self.dp_mode == "sgd" else "site"
            parts.append(f"{'DP-SGD' if self.dp_mode == 'sgd' else 'site-level DP'} "
                         f"ε={self.dp_epsilon:g} per {unit} (δ=1e-5)")  # fmt: skip
        if self.secure_aggregation:
            parts.append("secure aggregation")
        parts.append(f"seed {self.seed}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"merge": self.merge, "merge_options": dict(self.merge_options),
                "proximal_mu": self.proximal_mu, "control_variates": self.control_variates,
                "seed": self.seed, "dp_epsilon": self.dp_epsilon,
                "dp_mode": self.dp_mode,
                "secure_aggregation": self.secure_aggregation}  # fmt: skip


def default_demo_dir(base: Path = Path("runs")) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = base / f"demo-{stamp}", 1
    while path.exists():
        n += 1
        path = base / f"demo-{stamp}-{n}"
    return path


def run_demo(
    *,
    peers: int = 3,
    epochs: int = DEFAULT_EPOCHS,
    sync_frequency: int = DEFAULT_SYNC_FREQUENCY,
    workdir: Path | None = None,
    json_path: Path | None = None,
    echo: Echo = print,
    show_progress: bool = True,
    compression: str | None = None,
    topology: str | None = None,
    ui_listen: str | None = None,
    hold_ui: Callable[[str], None] | None = None,
    training: DemoTraining | None = None,
) -> DemoReport:
    """Prepare the data, train the baselines, run the swarm, print the table, and draw each
    site's accuracy over the rounds (a PNG next to the JSON, else in the run folder).

    With `ui_listen` (HOST:PORT), a dashboard serves the swarm from the start; once the run
    is over, `hold_ui(url)` is called while it still serves (it returns when the user is
    done). `training` chooses the merge method and the drift corrections, and the seed.
    Raises DemoFailed when the swarm run does not end with every peer exiting 0, and
    SwarmError (before any training) when the options do not go together.
    """
    from openswarm.demo.baselines import centralized_accuracy, local_accuracies
    from openswarm.demo.data import SEED, Split, check_sites, prepare

    check_sites(peers)
    training = training or DemoTraining()
    training.check(compression, topology)
    started = time.monotonic()
    root = (workdir or default_demo_dir()).expanduser().resolve()
    if (root / "swarm").exists():
        raise LaunchError(f"{root} already holds a demo run; choose another --workdir")
    echo(f"preparing {peers} non-IID shards of the MNIST subset in {root / 'data'}")
    data = prepare(root / "data", peers, seed=SEED + training.seed)
    shards = [Split.load(d / "shard.npz") for d in data.shard_dirs]
    test = Split.load(data.test_path)
    echo(f"training the baselines ({epochs} epochs): each site alone, and all data pooled")
    local = local_accuracies(shards, test, epochs, training.seed)
    central = centralized_accuracy(shards, test, epochs, training.seed)
    echo(f"training the swarm: {peers} peers, a merge every {sync_frequency} batches; "
         f"{training.describe()}")  # fmt: skip
    dashboard = _Dashboard(ui_listen, echo)
    try:
        report = _swarm_part(
            root,
            data,
            peers,
            epochs,
            sync_frequency,
            compression,
            topology,
            show_progress,
            local,
            central,
            dashboard,
            training,
        )
        echo(format_report(report))
        echo(f"demo took {time.monotonic() - started:.0f} s; files in {root}")
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
            echo(f"wrote {json_path}")
        picture = (json_path.with_suffix(".png") if json_path is not None
                   else root / "accuracy.png")  # fmt: skip
        _draw(report, central, picture, echo)
        if dashboard.url is not None and hold_ui is not None:
            hold_ui(dashboard.url)
    finally:
        dashboard.close()
    return report


def _swarm_part(
    root: Path,
    data: Any,
    peers: int,
    epochs: int,
    sync_frequency: int,
    compression: str | None,
    topology: str | None,
    show_progress: bool,
    local: list[float],
    central: float,
    dashboard: _Dashboard,
    training: DemoTraining,
) -> DemoReport:
    run = run_swarm(
        "openswarm.demo.train",
        peers,
        module=True,
        data_dirs=data.shard_dirs,
        script_args=[
            "--test",
            str(data.test_path),
            "--sync-frequency",
            str(sync_frequency),
            *(["--compression", compression] if compression else []),
            *(["--topology", topology] if topology else []),
            *training.script_args(),
        ],
        workdir=root / "swarm",
        epochs=epochs,
        on_progress=ProgressPrinter() if show_progress else None,
        on_ledger=dashboard.start if dashboard.listen else None,
        keep_ledger=dashboard.listen is not None,
    )
    dashboard.ledger = run.ledger or dashboard.ledger
    if not run.ok:
        reason = "interrupted" if run.interrupted else run.error or "a peer failed"
        raise DemoFailed(f"the swarm run did not complete ({reason})", run)
    report = DemoReport(
        peers=[
            PeerReport(
                name=p.name,
                local_accuracy=local[p.rank],
                swarm_accuracy=(p.result or {}).get("swarm_accuracy"),
                final_digest=p.final_digest,
                epsilon=((p.result or {}).get("privacy") or {}).get("epsilon"),
            )
            for p in run.peers
        ],
        centralized_accuracy=central,
        rounds=run.rounds,
        seconds=run.seconds,
        ledger_dir=run.ledger_dir,
        compression=compression or "none",
        topology=topology or "leader",
        received_mb=_received_mb(run),
        training=training.to_json(),
    )
    return report


def _draw(report: DemoReport, central: float, path: Path, echo: Echo) -> None:
    from openswarm.demo.plot import accuracy_series, plot_accuracy

    try:
        series = accuracy_series(report.ledger_dir, DEFAULT_CONTRACT)
        plot_accuracy(series, path, centralized=central,
                      local={p.name: p.local_accuracy for p in report.peers})  # fmt: skip
    except ImportError:
        echo("no plot: matplotlib is not installed (pip install 'openswarm[demo]')")
        return
    except (OSError, ValueError, StoreError) as exc:  # an unwritable folder, a broken chain
        echo(f"no plot: {exc}")
        return
    echo(f"wrote {path} (each site's accuracy over the rounds)")


class _Dashboard:
    """The demo's dashboard, when asked for: started once the ledger serves, closed (with
    the ledger the run kept for it) at the end."""

    def __init__(self, listen: str | None, echo: Echo) -> None:
        self.listen = listen
        self.echo = echo
        self.url: str | None = None
        self.ledger: LocalLedger | None = None
        self._running: Any = None
        self._client: Any = None

    def start(self, ledger: LocalLedger) -> None:
        from openswarm.ui.launch import UiError, start_dashboard

        self.ledger = ledger  # closed by close(), however the run ends
        self._client = ledger.client("admin")
        try:
            self._running = start_dashboard(self._client, self.listen or "127.0.0.1:0")
        except UiError as exc:
            raise LaunchError(f"the dashboard did not start: {exc}") from exc
        self.url = self._running.url
        self.echo(f"dashboard at {self.url} (live while the swarm trains)")

    def close(self) -> None:
        if self._running is not None:
            self._running.close()
        if self._client is not None:
            self._client.close()
        if self.ledger is not None:
            self.ledger.close()


def format_report(report: DemoReport) -> str:
    """The demo's table: local-only vs swarm accuracy per site, then centralized."""
    rows = [
        "test accuracy on the same 1,000 held-out images:",
        f"{'site':<10} {'local only':>10} {'swarm':>8}  final model digest",
    ]
    for p in report.peers:
        spent = "" if p.epsilon is None else f"  ε spent {p.epsilon:.2f}"
        rows.append(
            f"{p.name:<10} {_pct(p.local_accuracy):>10} {_pct(p.swarm_accuracy):>8}  "
            f"{(p.final_digest or '-')[:16]}{spent}"
        )
    rows.append(f"centralized, all data pooled: {_pct(report.centralized_accuracy)}")
    digests = {p.final_digest for p in report.peers}
    if len(digests) == 1 and None not in digests:
        rows.append(f"final digest (same on every peer): {digests.pop()}")
    else:
        rows.append("final digests differ between peers!")
    if report.training:
        rows.append(f"swarm training: {DemoTraining(**report.training).describe()}")
    rows.append(
        f"rounds: {report.rounds}, swarm time: {report.seconds:.1f} s, ledger: {report.ledger_dir}"
    )
    if report.received_mb is not None:
        rows.append(f"models moved: {report.received_mb:.1f} MB received by all sites "
                    f"(compression: {report.compression}, merge topology: "
                    f"{report.topology})")  # fmt: skip
    return "\n".join(rows)


def _received_mb(run: SwarmRunResult) -> float | None:
    """MB of models all sites received over the run, as each counted it (None: unknown)."""
    counts = [((p.result or {}).get("traffic") or {}).get("received") for p in run.peers]
    return None if None in counts else sum(counts) / 1e6


def failure_text(error: DemoFailed) -> str:
    logs = ", ".join(str(p.log_path) for p in error.run.peers)
    return f"{error}\n{format_summary(error.run)}\nlogs: {logs}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
