"""`openswarm operator start`: run the tasks the ledger assigns to this host."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import typer

from openswarm.cli.ledger import _fail

operator_app = typer.Typer(help="The operator: runs this host's tasks.", no_args_is_help=True)


@operator_app.command("start")
def start(
    config: Path = typer.Option(..., "--config", "-c", help="The operator config (YAML)."),
) -> None:
    """Announce this host's operator on the ledger and run the tasks assigned to it, until
    stopped (Ctrl-C or SIGTERM; its runs are stopped too)."""
    from openswarm.ledger.client import LedgerError
    from openswarm.operator import Operator, OperatorConfig, OperatorConfigError, OperatorError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        operator = Operator(OperatorConfig.load(config))
    except (OperatorConfigError, LedgerError) as exc:
        _fail(str(exc), code=2)

    def stop(*_: Any) -> None:
        operator.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        operator.serve()
    except (OperatorError, LedgerError) as exc:
        _fail(str(exc))
