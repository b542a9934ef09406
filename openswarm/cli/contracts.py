"""`openswarm contract …`, `openswarm nodes` and `openswarm perf`: a swarm as its admins see
it, read from the ledger (through a context, see `openswarm context`, or --connect)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import typer

from openswarm.cli.ledger import (
    ADMIN_HELP,
    CONNECT_HELP,
    CONTEXT_HELP,
    _client,
    _fail,
    contract_create_cmd,
)

contract_app = typer.Typer(help="Training contracts on the ledger.", no_args_is_help=True)

_CONNECT = typer.Option(None, "--connect", help=CONNECT_HELP)
_IDENTITY = typer.Option(None, "--identity", help=ADMIN_HELP)
_CONTEXT = typer.Option(None, "--context", help=CONTEXT_HELP)
_JSON = typer.Option(False, "--json", help="Print JSON.")


def _ledger_state(connect: str | None, identity: Path | None, context: str | None,
                  contract: str | None = None) -> dict[str, Any]:  # fmt: skip
    from openswarm.ledger.client import LedgerError

    try:
        with _client(connect, identity, context) as client:
            return client.state(contract)
    except LedgerError as exc:
        _fail(str(exc))


@contract_app.command("create")
def create(
    name: str = typer.Argument(..., help="The training contract's name."),
    settings: str = typer.Option(
        "{}", "--settings", help="Its settings as JSON, e.g. '{\"min_peers\": 3}'."
    ),
    connect: str = _CONNECT,
    identity: Path = _IDENTITY,
    context: str = _CONTEXT,
) -> None:
    """Create a training contract (or approve another admin's proposal to create it)."""
    contract_create_cmd(name, settings, connect, identity, context)  # the same command


@contract_app.command("list")
def list_cmd(
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
    as_json: bool = _JSON,
) -> None:  # fmt: skip
    """Every training contract: its round, members and settings."""
    from openswarm.admin.views import contract_rows

    rows = contract_rows(_ledger_state(connect, identity, context))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no training contracts; create one with 'openswarm contract create NAME'")
    for row in rows:
        done = ", all finished" if row["all_finished"] else ""
        typer.echo(
            f"{row['contract']}: round {row['round']} ({row['merged_rounds']} merged), "
            f"{row['active']}/{row['members']} members active, {row['finished']} finished"
            f"{done}; {row['merge_method']}, {row['merge_topology']}, min_peers "
            f"{row['min_peers']}, audit {row['audit']}"
        )


@contract_app.command("show")
def show(
    name: str = typer.Argument(..., help="The training contract."),
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
    as_json: bool = _JSON,
) -> None:  # fmt: skip
    """A contract's settings, members (present or silent on the ledger) and latest merge."""
    from openswarm.admin.views import member_rows
    from openswarm.ledger.client import LedgerError

    try:
        with _client(connect, identity, context) as client:
            state = client.state(name)["state"]
            ledger_time = float(client.status()["ledger_time"])
    except LedgerError as exc:
        _fail(str(exc))
    if state is None:
        _fail(f"no training contract named {name!r} on this ledger ('openswarm contract list')")
    if as_json:
        typer.echo(json.dumps(state, indent=2, sort_keys=True))
        return
    typer.echo(f"contract  {name}: round {state['round']}, {state['merged_rounds']} merged")
    typer.echo(f"settings  {json.dumps(state['settings'], sort_keys=True)}")
    latest = state.get("latest_merged")
    if latest:
        typer.echo(f"latest    round {latest['round']} {latest['digest'][:16]}… by "
                   f"{latest['leader']}, held by {', '.join(latest['holders'])}")  # fmt: skip
    for row in member_rows(state, ledger_time):
        flags = [f for f, on in (("finished", row["finished"]), ("left", not row["active"]),
                                 ("never leads", not row["leads"])) if on]  # fmt: skip
        seen = "present" if row["present"] else f"silent for {row['silent_s']:.0f} s"
        typer.echo(f"member    {row['name']} {row['endpoint']}  {seen}"
                   + (f"  ({', '.join(flags)})" if flags else ""))  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add `openswarm nodes` and `openswarm perf` to the top-level app."""

    @app.command("nodes")
    def nodes(
        connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
        as_json: bool = _JSON,
    ) -> None:  # fmt: skip
        """Ledger nodes (reachable, height, quorum), admitted identities by role, operators
        (alive, the peer they run as) and each contract's members with whether they are
        present on the ledger."""
        from openswarm.admin.client import Admin, AdminError

        try:
            with Admin(context, connect=connect, identity=identity) as admin:
                view = admin.nodes()
        except AdminError as exc:
            _fail(str(exc))
        if as_json:
            typer.echo(json.dumps(view, indent=2, sort_keys=True))
            return
        when = dt.datetime.fromtimestamp(view["ledger_time"], dt.UTC).isoformat(timespec="seconds")
        typer.echo(f"swarm {view['swarm']}, ledger time {when}")
        for endpoint, node in view["nodes"].items():
            if "error" in node:
                typer.echo(f"ledger node  {endpoint}  UNREACHABLE: {node['error']}")
            else:
                quorum = "" if node.get("has_quorum", True) else "  NO QUORUM"
                typer.echo(f"ledger node  {node['node']} {endpoint}  height {node['height']}"
                           f"{quorum}")  # fmt: skip
        for role, names in view["identities"].items():
            typer.echo(f"{role + 's':<12} {', '.join(names)}")
        for name, row in view["operators"].items():
            alive = "alive" if row["alive"] else f"silent for {row['silent_s']:.0f} s"
            typer.echo(f"operator     {name} on {row['host'] or '?'} as peer {row['peer']}  "
                       f"{alive}")  # fmt: skip
        for contract, rows in view["members"].items():
            for row in rows:
                where = (
                    "present"
                    if row["present"]
                    else ("left" if not row["active"] else f"silent for {row['silent_s']:.0f} s")
                )
                typer.echo(f"peer         {row['name']} ({contract}) {row['endpoint']}  "
                           f"{where}")  # fmt: skip

    @app.command("perf")
    def perf(
        contract: str = typer.Argument(..., help="The training contract."),
        connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
        as_json: bool = _JSON,
    ) -> None:  # fmt: skip
        """Per-site round, epoch, loss, metric and ETA of a contract (HPE's PERFDATA)."""
        from openswarm.admin.views import perf_rows
        from openswarm.cli.status import render

        state = _ledger_state(connect, identity, context, contract)["state"]
        if state is None:
            _fail(f"no training contract named {contract!r} on this ledger")
        if as_json:
            typer.echo(json.dumps(perf_rows(state), indent=2))
            return
        typer.echo(render(state, contract))
