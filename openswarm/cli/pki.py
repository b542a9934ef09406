"""`openswarm pki …`: the swarm's certificate authority and identities."""

from __future__ import annotations

import typer

pki_app = typer.Typer(help="Certificate authority and identities.", no_args_is_help=True)
