"""`openswarm task …`: define once what every site runs, and ask the sites to run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from openswarm.cli.contracts import _CONNECT, _CONTEXT, _IDENTITY, _JSON, _ledger_state
from openswarm.cli.ledger import _admin_tx, _fail

task_app = typer.Typer(help="Tasks: what every site of the swarm runs.", no_args_is_help=True)


@task_app.command("create")
def create(
    task_file: Path = typer.Option(..., "-f", "--file", help="The task file (YAML)."),
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
) -> None:  # fmt: skip
    """Record a task: its program folder becomes a content-addressed bundle (only its
    digest and file list go on the ledger); a task never changes once recorded."""
    from openswarm.admin.tasks import load_task
    from openswarm.ledger.tasks import TaskError

    try:
        task = load_task(task_file)
    except TaskError as exc:
        _fail(str(exc))
    bundle = task["bundle"]
    typer.echo(f"task {task['name']}: bundle {bundle['digest'][:16]}… ({len(bundle['files'])} "
               f"files, {bundle['size']} bytes), entrypoint {task['entrypoint']}")  # fmt: skip
    _admin_tx(connect, identity, context, "task_create", payload={"task": task})


@task_app.command("list")
def list_cmd(
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
    as_json: bool = _JSON,
) -> None:  # fmt: skip
    """Every task: its contract, bundle and assignment."""
    tasks = _ledger_state(connect, identity, context).get("tasks") or {}
    if as_json:
        typer.echo(json.dumps(tasks, indent=2, sort_keys=True))
        return
    if not tasks:
        typer.echo("no tasks; record one with 'openswarm task create -f task.yaml'")
    for name, task in tasks.items():
        typer.echo(f"{name}: contract {task['spec']['contract']}, bundle "
                   f"{task['spec']['bundle']['digest'][:12]}…, {_assigned(task)}")  # fmt: skip


@task_app.command("show")
def show(
    name: str = typer.Argument(..., help="The task."),
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
) -> None:  # fmt: skip
    """A task's definition (as JSON) and assignment."""
    tasks = _ledger_state(connect, identity, context).get("tasks") or {}
    if name not in tasks:
        _fail(f"no task named {name!r} (known: {', '.join(tasks) or 'none yet'})")
    typer.echo(json.dumps(tasks[name], indent=2, sort_keys=True))


@task_app.command("assign")
def assign(
    name: str = typer.Argument(..., help="The task."),
    peers: int = typer.Option(None, "--peers", help="Any N of the sites run it."),
    every: bool = typer.Option(False, "--all", help="Every site runs it."),
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
) -> None:  # fmt: skip
    """Ask the sites to run a task (with the admin quorum's approval)."""
    if (peers is None) == (not every):
        _fail("give exactly one of --peers N or --all")
    target: dict[str, Any] = {"all": True} if every else {"peers": peers}
    _admin_tx(connect, identity, context, "task_assign", payload={"task": name, "target": target})


@task_app.command("reset")
def reset(
    name: str = typer.Argument(..., help="The task."),
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
) -> None:  # fmt: skip
    """Withdraw a task's assignment."""
    _admin_tx(connect, identity, context, "task_reset", payload={"task": name})


def _assigned(task: dict[str, Any]) -> str:
    assignment = task.get("assignment")
    if assignment is None:
        return "not assigned" + (f" (reset {task['resets']} time(s))" if task["resets"] else "")
    target = assignment["target"]
    return "assigned to all sites" if target.get("all") else f"assigned to {target['peers']} sites"
