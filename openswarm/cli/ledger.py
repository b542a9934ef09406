"""`openswarm ledger …`: run, inspect and verify ledger replicas."""

from __future__ import annotations

import typer

ledger_app = typer.Typer(help="Permissioned ledger replicas.", no_args_is_help=True)
