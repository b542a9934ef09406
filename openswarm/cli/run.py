"""`openswarm run` (a local swarm of N processes) and `openswarm demo`."""

from __future__ import annotations

from pathlib import Path

import typer

from openswarm import DEFAULT_CONTRACT
from openswarm.cli.merge_options import MERGE_OPTION_HELP, parse_merge_options

INTERRUPTED = 130


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def run(
    ctx: typer.Context,
    script: str = typer.Argument(..., help="Training script (or module, with --module)."),
    peers: int = typer.Option(..., "--peers", "-n", help="Number of peers to start."),
    data_dir: list[Path] = typer.Option(
        [], "--data-dir", help="Data folder: once (shared by all) or once per peer, in order."
    ),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Run folder (default ./runs/run-YYYYmmdd-HHMMSS)."
    ),
    min_peers: int | None = typer.Option(None, "--min-peers", help="Default: --peers."),
    contract: str = typer.Option(DEFAULT_CONTRACT, "--contract", help="Training contract."),
    epochs: int | None = typer.Option(None, "--epochs", help="Sets MAX_EPOCHS for the peers."),
    module: bool = typer.Option(False, "--module", "-m", help="SCRIPT is a module (-m)."),
    threads_per_peer: int | None = typer.Option(
        None, "--threads-per-peer", help="Math threads per peer (default: cores / peers)."
    ),
) -> None:
    """Run N copies of SCRIPT as a local swarm, each in its own folder RUN_DIR/NAME;
    arguments after `--` go to the script."""
    from openswarm.launch import LaunchError, ProgressPrinter, format_summary, run_swarm

    try:
        result = run_swarm(
            script,
            peers,
            data_dirs=data_dir,
            script_args=list(ctx.args),
            workdir=workdir,
            min_peers=min_peers,
            contract=contract,
            epochs=epochs,
            module=module,
            threads_per_peer=threads_per_peer,
            on_progress=ProgressPrinter(),
        )
    except LaunchError as exc:
        _fail(str(exc))
        return
    typer.echo(format_summary(result))
    if result.interrupted:
        typer.echo(f"interrupted: peers and ledger stopped; logs in {result.run_dir}", err=True)
        raise typer.Exit(INTERRUPTED)
    if not result.ok:
        failed = [p for p in result.peers if p.exit_code != 0]
        for p in failed:
            typer.echo(f"{p.name} exited with {p.exit_code}: see {p.log_path}", err=True)
        raise typer.Exit(1)


def demo(
    peers: int = typer.Option(3, "--peers", "-n", help="Number of sites (1 to 5)."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs, the same for all."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the results here."),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Run folder (default ./runs/demo-YYYYmmdd-HHMMSS)."
    ),
    compression: str | None = typer.Option(
        None,
        "--compression",
        help="How models travel: none, zstd, float16, bfloat16, int8 "
        "(lossy ones optionally +zstd).",
    ),
    topology: str | None = typer.Option(
        None,
        "--topology",
        help="Who merges: leader (one site a round) or sharded (every site a part).",
    ),
    ui: bool = typer.Option(
        False, "--ui", help="Serve the dashboard on the demo's swarm (its URL is printed)."
    ),
    ui_listen: str = typer.Option(
        "127.0.0.1:0", "--ui-listen", help="HOST:PORT for --ui (port 0: any free one)."
    ),
    merge: str = typer.Option(
        "mean",
        "--merge",
        help="Merge method: mean, a robust one (coordmedian, trimmed_mean, …) or a server "
        "optimizer (fedavgm, fedadam, fedyogi, fedadagrad).",
    ),
    merge_option: list[str] = typer.Option([], "--merge-option", help=MERGE_OPTION_HELP),
    proximal_mu: float = typer.Option(
        0.0, "--proximal-mu", help="FedProx: pull local training towards the last merge."
    ),
    control_variates: bool = typer.Option(
        False, "--control-variates", help="SCAFFOLD: correct local drift with control variates."
    ),
    seed: int = typer.Option(
        0, "--seed", help="Moves the data split, the initial weights and the shuffling."
    ),
    dp: float | None = typer.Option(
        None, "--dp", help="Differential privacy: each site's ε budget (δ = 1e-5)."
    ),
    secure_aggregation: bool = typer.Option(
        False,
        "--secure-aggregation",
        help="Mask each site's update so that the merger learns only the sum.",
    ),
    dp_mode: str = typer.Option(
        "sgd",
        "--dp-mode",
        help="With --dp: sgd (DP-SGD, ε per record) or site (noised updates, ε per site).",
    ),
) -> None:
    """Skewed MNIST shards on N sites: local-only vs swarm vs centralized accuracy, and a
    PNG of each site's accuracy over the rounds."""
    from openswarm.demo.data import DataError
    from openswarm.demo.run_demo import DemoFailed, DemoTraining, failure_text, run_demo
    from openswarm.launch import LaunchError
    from openswarm.protocol import SwarmError

    if epochs < 1:
        _fail(f"--epochs must be at least 1, got {epochs}")
    try:
        chosen = parse_merge_options(merge_option)
    except ValueError as exc:
        _fail(str(exc))
        return
    training = DemoTraining(merge=merge, merge_options=chosen,
                            proximal_mu=proximal_mu, control_variates=control_variates,
                            seed=seed, dp_epsilon=dp, dp_mode=dp_mode,
                            secure_aggregation=secure_aggregation)  # fmt: skip
    try:
        run_demo(peers=peers, epochs=epochs, workdir=workdir, json_path=json_path,
                 echo=typer.echo, compression=compression, topology=topology,
                 ui_listen=ui_listen if ui else None, hold_ui=_hold_dashboard,
                 training=training)  # fmt: skip
    except (DataError, LaunchError, SwarmError) as exc:
        _fail(str(exc))
    except DemoFailed as exc:
        typer.echo(failure_text(exc), err=True)
        raise typer.Exit(INTERRUPTED if exc.run.interrupted else 1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(INTERRUPTED) from None


def _hold_dashboard(url: str) -> None:
    """Keep the demo's dashboard (and its ledger) up until Ctrl-C or SIGTERM."""
    import contextlib
    import signal
    import threading

    typer.echo(f"the dashboard stays up at {url}; press Ctrl-C to end the demo")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()


def register(app: typer.Typer) -> None:
    """Add `run` and `demo` to the top-level `openswarm` app."""
    app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        run
    )
    app.command("demo")(demo)
