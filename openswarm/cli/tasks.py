"""`openswarm task …`: define once what every site runs, and ask the sites to run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from openswarm.cli.contracts import _CONNECT, _CONTEXT, _IDENTITY, _JSON, _ledger_state
from openswarm.cli.ledger import _admin_tx, _client, _fail

task_app = typer.Typer(help="Tasks: what every site of the swarm runs.", no_args_is_help=True)


@task_app.command("create")
def create(
    task_file: Path = typer.Option(..., "-f", "--file", help="The task file (YAML)."),
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
) -> None:  # fmt: skip
    """Record a task: its program folder becomes a content-addressed bundle, uploaded to the
    ledger nodes (only its digest and file list go on the ledger); a task never changes."""
    from openswarm.admin.bundles import BundleError, push_bundle
    from openswarm.admin.tasks import read_task
    from openswarm.ledger.tasks import TaskError

    try:
        task, folder = read_task(task_file)
    except TaskError as exc:
        _fail(str(exc))
    bundle = task["bundle"]
    typer.echo(f"task {task['name']}: bundle {bundle['digest'][:16]}… ({len(bundle['files'])} "
               f"files, {bundle['size']} bytes), entrypoint {task['entrypoint']}")  # fmt: skip
    with _client(connect, identity, context) as client:
        try:
            stored = push_bundle(client.endpoints, client.identity, folder, bundle)
        except BundleError as exc:
            _fail(str(exc))
    for endpoint, why in stored.items():
        typer.echo(f"bundle on {endpoint}: " + ("stored" if why is None else f"NOT stored ({why})"))
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
    every: bool = typer.Option(False, "--all", help="Every operator that has announced itself."),
    target: list[str] = typer.Option([], "--target", help="This operator runs it (repeatable)."),
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
) -> None:  # fmt: skip
    """Ask the sites to run a task (with the admin quorum's approval)."""
    if sum((peers is not None, every, bool(target))) != 1:
        _fail("give exactly one of --peers N, --all or --target OPERATOR")
    chosen: dict[str, Any] = {"all": True}
    if peers is not None:
        chosen = {"peers": peers}
    elif target:
        chosen = {"operators": sorted(set(target))}
    _admin_tx(connect, identity, context, "task_assign", payload={"task": name, "target": chosen})


@task_app.command("wait")
def wait(
    name: str = typer.Argument(..., help="The task."),
    timeout: float = typer.Option(3600.0, "--timeout", help="Seconds to wait at most."),
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
) -> None:  # fmt: skip
    """Wait until every site assigned the task has finished it; exit 0 only if all completed
    (1: some failed or refused, 2: not done in time)."""
    from openswarm.admin.client import Admin, AdminError

    try:
        with Admin(context, connect=connect, identity=identity) as admin:
            status = admin.wait_task(name, timeout_s=timeout)
    except AdminError as exc:
        _fail(str(exc), code=2)
    for operator, run in sorted(status["details"].items()):
        code = "" if run.get("exit_code") is None else f" (exit {run['exit_code']})"
        detail = f": {run['detail']}" if run.get("detail") else ""
        typer.echo(f"{operator} as {run['peer']}: {run['state']}{code}{detail}")
    if not status["ok"]:
        raise typer.Exit(1)


@task_app.command("logs")
def logs(
    name: str = typer.Argument(..., help="The task."),
    refresh: bool = typer.Option(False, "--refresh",
                                 help="Ask the running sites for their latest lines first."),
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
) -> None:  # fmt: skip
    """The last lines of each site's log of the task's current run, as its operator reported
    them (the whole log stays on the host, in the operator's work folder)."""
    from openswarm.admin.client import Admin, AdminError

    try:
        with Admin(context, connect=connect, identity=identity) as admin:
            runs = admin.task_logs(name, refresh=refresh)
    except AdminError as exc:
        _fail(str(exc))
    if not runs:
        typer.echo(f"task {name}: no site has reported a run of it")
    for operator, run in sorted(runs.items()):
        typer.echo(f"=== {operator} ({run['state']}) ===")
        typer.echo(run.get("log_tail") or "(no output)")


@task_app.command("reset")
def reset(
    name: str = typer.Argument(..., help="The task."),
    connect: str = _CONNECT, identity: Path = _IDENTITY, context: str = _CONTEXT,
) -> None:  # fmt: skip
    """Withdraw a task's assignment: the operators stop its runs."""
    _admin_tx(connect, identity, context, "task_reset", payload={"task": name})


def _assigned(task: dict[str, Any]) -> str:
    assignment = task.get("assignment")
    if assignment is None:
        return "not assigned" + (f" (reset {task['resets']} time(s))" if task["resets"] else "")
    target = assignment["target"]
    if target.get("peers"):
        whom = f"any {target['peers']} site(s)"
    else:
        whom = ", ".join(assignment["operators"])
    states = ", ".join(f"{op} {run['state']}" for op, run in sorted(assignment["runs"].items()))
    return f"run {assignment['run']} assigned to {whom}" + (f": {states}" if states else "")
