"""`openswarm status`: per-site progress of a training contract, read from the ledger."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from openswarm import DEFAULT_CONTRACT
from openswarm.admin.views import eta_seconds
from openswarm.privacy.report import describe, latest_privacy
from openswarm.protocol import ROUND_PHASES

__all__ = ["eta_seconds", "register", "render", "where_time_goes"]


def where_time_goes(state: Mapping[str, Any]) -> str | None:
    """The latest round whose sites reported phases: the mean seconds per phase over its
    sites, and the megabytes each sent and received on average (None: no report yet)."""
    for round in sorted(state.get("metrics") or {}, key=int, reverse=True):
        reports = [r for r in state["metrics"][round].values() if r.get("phases")]
        if not reports:
            continue
        parts = []
        for phase in ROUND_PHASES:
            values = [r["phases"][phase] for r in reports if phase in r["phases"]]
            if values and phase != "total":
                parts.append(f"{phase} {sum(values) / len(values):.3f} s")
        totals = [r["phases"]["total"] for r in reports if "total" in r["phases"]]
        line = f"round {round} (mean of {len(reports)} sites): " + ", ".join(parts)
        if totals:
            line += f" of {sum(totals) / len(totals):.3f} s"
        moved = [r["traffic"] for r in reports if r.get("traffic")]
        if moved:
            sent = sum(t["sent"] for t in moved) / len(moved) / 1e6
            received = sum(t["received"] for t in moved) / len(moved) / 1e6
            line += f"; {sent:.1f} MB sent, {received:.1f} MB received per site"
        return line
    return None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def render(state: Mapping[str, Any], contract: str) -> str:
    """The status text: a header, one line per site with its ETA, and the overall ETA."""
    from openswarm.launch.progress import build_progress

    members = state.get("members") or {}
    progress = build_progress(state, {name: None for name in sorted(members)}, 0.0)
    etas = eta_seconds(state)
    interval = state.get("sync_interval")
    lines = [
        f"contract {contract}: round {state.get('round')}, {progress.merged} merged"
        + (f", sync every {interval} batches (adaptive)" if interval else "")
    ]
    privacy = latest_privacy(state)
    for peer in progress.peers:
        line = f"{peer.line()}  eta {_duration(etas.get(peer.name))}"
        if peer.name in privacy:
            line += f"  {describe(privacy[peer.name])}"
        lines.append(line)
    spent = where_time_goes(state)
    if spent:
        lines.append(f"where time goes, {spent}")
    known = [e for e in etas.values() if e is not None]
    if state.get("all_finished"):
        lines.append("all sites finished")
    elif known:
        lines.append(f"eta {_duration(max(known))} (slowest site)")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add `openswarm status` to the top-level app."""

    @app.command("status")
    def status(
        connect: str = typer.Option(
            None, "--connect", help="HOST:PORT[,…] of ledger replicas (default: the context's)."
        ),
        identity: Path = typer.Option(
            None,
            "--identity",
            help="Identity folder (default: the context's, or $OPENSWARM_IDENTITY).",
        ),
        context: str = typer.Option(None, "--context", help="The admin context to use."),
        contract: str = typer.Option(DEFAULT_CONTRACT, "--contract"),
        watch: float = typer.Option(0.0, "--watch", help="Refresh every N seconds."),
        as_json: bool = typer.Option(False, "--json", help="Print the contract state as JSON."),
    ) -> None:
        """Per-site progress (round, epoch, loss, metric) and an ETA for a training contract."""
        from openswarm.admin.contexts import ContextError, resolve
        from openswarm.ledger.client import LedgerClient, LedgerError
        from openswarm.pki import Identity, PkiError

        try:
            endpoints, folder = resolve(connect, identity, context)
            client = LedgerClient(list(endpoints), Identity.load(folder), timeout_s=10)
        except (ContextError, PkiError, LedgerError) as exc:
            typer.secho(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        with client:
            while True:
                try:
                    state = client.state(contract)["state"]
                except LedgerError as exc:
                    typer.secho(f"error: {exc}", err=True)
                    raise typer.Exit(1) from exc
                if state is None:
                    typer.echo(f"contract {contract}: no site has registered yet")
                elif as_json:
                    typer.echo(json.dumps(state, indent=2, sort_keys=True))
                else:
                    typer.echo(render(state, contract))
                if watch <= 0:
                    return
                time.sleep(watch)
                typer.echo("")
