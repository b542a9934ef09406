"""The `openswarm` console command."""

from __future__ import annotations

import typer

from openswarm import __version__
from openswarm.cli.context import context_app
from openswarm.cli.contracts import contract_app
from openswarm.cli.contracts import register as register_contracts
from openswarm.cli.ledger import ledger_app
from openswarm.cli.operator import operator_app
from openswarm.cli.pki import pki_app
from openswarm.cli.run import register as register_run
from openswarm.cli.status import register as register_status
from openswarm.cli.tasks import task_app
from openswarm.cli.ui import register as register_ui

app = typer.Typer(
    name="openswarm",
    help="Open swarm learning: sites train one model together, coordinated by a ledger.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(pki_app, name="pki")
app.add_typer(ledger_app, name="ledger")
app.add_typer(context_app, name="context")
app.add_typer(contract_app, name="contract")
app.add_typer(task_app, name="task")
app.add_typer(operator_app, name="operator")
register_run(app)
register_status(app)
register_contracts(app)
register_ui(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"openswarm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Open swarm learning: sites train one model together, coordinated by a ledger."""


if __name__ == "__main__":
    app()
