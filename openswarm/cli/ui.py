"""`openswarm ui` (the dashboard) and `openswarm export` (a contract's metrics to MLflow or
TensorBoard)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from openswarm.cli.ledger import ADMIN_HELP, CONNECT_HELP, CONTEXT_HELP, _client, _fail


def register(app: typer.Typer) -> None:
    """Add `openswarm ui` and `openswarm export` to the top-level app."""

    @app.command("ui")
    def ui(
        connect: str = typer.Option(None, "--connect", help=CONNECT_HELP),
        identity: Path = typer.Option(
            None,
            "--identity",
            help=ADMIN_HELP + " A peer or operator identity gives a read-only view.",
        ),
        context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
        listen: str = typer.Option(
            "127.0.0.1:8080",
            "--listen",
            help="HOST:PORT to serve on. Off loopback, a login token (printed) is required.",
        ),
        mtls: bool = typer.Option(
            False, "--mtls", help="Serve HTTPS that demands a client certificate of the swarm."
        ),
        experiments: Path = typer.Option(
            None,
            "--experiments",
            help="The saved-experiments file (default: $OPENSWARM_EXPERIMENTS or "
            "~/.local/share/openswarm/experiments.json).",
        ),
    ) -> None:
        """Serve the live dashboard: swarm, contracts, ledger explorer and experiments."""
        from openswarm.ui.launch import UiError, start_dashboard

        client = _client(connect, identity, context)
        try:
            running = start_dashboard(client, listen, mtls=mtls, experiments=experiments)
        except UiError as exc:
            client.close()
            _fail(str(exc))
        access = running.dashboard.access.mode
        typer.echo(f"dashboard at {running.url}")
        if access == "token":
            typer.echo("it listens beyond this machine: only the link above (with its login "
                       "token) opens it; keep the token to yourself. Plain HTTP: across a "
                       "network you do not trust, use --mtls (or a TLS proxy)")  # fmt: skip
        elif access == "mtls":
            typer.echo(
                "HTTPS; clients need a certificate of this swarm that the ledger vouches for"
            )
        else:
            typer.echo("it listens on loopback only: anyone on this machine can open it")
        if client.identity.role != "admin":
            typer.echo(
                f"read-only: {client.identity.name} is a {client.identity.role}, not an admin"
            )
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        finally:
            running.close()
            client.close()

    @app.command("export")
    def export(
        target: str = typer.Argument(..., help="mlflow or tensorboard"),
        contract: str = typer.Argument(..., help="The training contract to export."),
        to: str = typer.Option(
            None,
            "--to",
            help="MLflow: a tracking URI or folder (default ./mlruns); TensorBoard: a log "
            "folder (default ./tb-logs/CONTRACT).",
        ),
        connect: str = typer.Option(None, "--connect", help=CONNECT_HELP),
        identity: Path = typer.Option(None, "--identity", help=ADMIN_HELP),
        context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
    ) -> None:
        """Write a contract's per-site metrics and settings, as the ledger holds them, to
        MLflow or TensorBoard."""
        from openswarm.export import ExportError, export_contract

        if target not in ("mlflow", "tensorboard"):
            _fail(f"unknown export target {target!r}: use mlflow or tensorboard")
        with _client(connect, identity, context) as client:
            try:
                where = export_contract(client, contract, target, to)
            except ExportError as exc:
                _fail(str(exc))
        typer.echo(where)
