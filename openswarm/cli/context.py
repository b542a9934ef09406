"""`openswarm context …`: named ledger endpoints and admin identities for admin commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer

context_app = typer.Typer(
    help="Admin contexts: a swarm's ledger and the admin identity that talks to it.",
    no_args_is_help=True,
)


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@context_app.command("add")
def add(
    name: str = typer.Argument(..., help="The context's name."),
    ledger: str = typer.Option(..., "--ledger", help="HOST:PORT[,HOST:PORT…] of ledger nodes."),
    identity: Path = typer.Option(..., "--identity", help="An admin identity folder."),
    use: bool = typer.Option(False, "--use", help="Make it the current context."),
) -> None:
    """Add (or replace) a context; the first one added becomes the current one."""
    from openswarm.admin.contexts import ContextError, ContextStore

    store = ContextStore()
    try:
        context = store.add(name, ledger, identity, use=use)
    except ContextError as exc:
        _fail(str(exc))
    current = " (current)" if store.current == name else ""
    typer.echo(f"context {name}{current}: ledger {','.join(context.ledger)}, identity "
               f"{context.identity}; kept in {store.path}")  # fmt: skip


@context_app.command("use")
def use_cmd(name: str = typer.Argument(..., help="The context to use from now on.")) -> None:
    """Choose the context admin commands use when given no --context."""
    from openswarm.admin.contexts import ContextError, ContextStore

    try:
        ContextStore().use(name)
    except ContextError as exc:
        _fail(str(exc))
    typer.echo(f"using context {name}")


@context_app.command("list")
def list_cmd() -> None:
    """The contexts (* marks the current one)."""
    from openswarm.admin.contexts import ContextError, ContextStore

    store = ContextStore()
    try:
        names, current = store.names(), store.current
    except ContextError as exc:
        _fail(str(exc))
    if not names:
        typer.echo(f"no contexts in {store.path}; add one with 'openswarm context add'")
    for name in names:
        typer.echo(f"{'*' if name == current else ' '} {name}")


@context_app.command("show")
def show(
    name: str = typer.Argument(None, help="The context (default: the current one)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A context's ledger endpoints and identity folder (checked again)."""
    from openswarm.admin.contexts import ContextError, ContextStore

    try:
        context = ContextStore().get(name)
    except ContextError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"name": context.name, **context.to_dict()}, indent=2))
        return
    typer.echo(f"context   {context.name}")
    typer.echo(f"ledger    {', '.join(context.ledger)}")
    typer.echo(f"identity  {context.identity}")


@context_app.command("remove")
def remove(name: str = typer.Argument(..., help="The context to forget.")) -> None:
    """Forget a context (its identity folder is left alone)."""
    from openswarm.admin.contexts import ContextError, ContextStore

    try:
        ContextStore().remove(name)
    except ContextError as exc:
        _fail(str(exc))
    typer.echo(f"removed context {name}")
