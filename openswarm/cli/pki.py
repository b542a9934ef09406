"""`openswarm pki …`: the swarm's certificate authority and identities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from openswarm.pki import (
    CA_CERT,
    IDENTITY_CERT,
    PkiError,
    describe_certificate,
    init_ca,
    install_trust,
    issue_identity,
)
from openswarm.pki.files import read_bytes

pki_app = typer.Typer(help="Certificate authority and identities.", no_args_is_help=True)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@pki_app.command("init")
def init_command(
    ca_dir: Path = typer.Argument(..., help="Folder for ca.crt, ca.key and swarm.json."),
    swarm: str = typer.Option(..., "--swarm", help="The swarm's name (a safe identifier)."),
    days: int = typer.Option(3650, "--days", help="CA validity in days."),
    force: bool = typer.Option(False, "--force", help="Replace an existing CA."),
    site: str | None = typer.Option(
        None, "--site", help="This CA is one site's own, in a swarm where each site has one."
    ),
) -> None:
    """Create the swarm's certificate authority (or one site's)."""
    try:
        init_ca(ca_dir, swarm, days=days, force=force, site=site)
    except PkiError as exc:
        raise _fail(exc) from None
    whose = f"site {site!r} of swarm {swarm!r}" if site else f"swarm {swarm!r}"
    typer.echo(f"created CA of {whose} in {ca_dir}")
    typer.echo(f"  certificate: {ca_dir / CA_CERT}")
    typer.echo(f"  private key: {ca_dir / 'ca.key'} (keep it secret)")


@pki_app.command("issue")
def issue_command(
    ca_dir: Path = typer.Argument(..., help="The CA folder (from `openswarm pki init`)."),
    name: str = typer.Argument(..., help="The identity's name (a safe identifier)."),
    role: str = typer.Option(..., "--role", help="peer, ledger, admin or operator."),
    hosts: list[str] = typer.Option(
        [], "--host", help="DNS name or IP the holder serves on (repeatable)."
    ),
    days: int = typer.Option(365, "--days", help="Validity in days."),
    out: Path | None = typer.Option(
        None, "--out", help="Identity folder (default: CA_DIR/identities/NAME)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing identity."),
) -> None:
    """Issue an identity (certificate, key and CA certificate) into a folder."""
    try:
        folder = issue_identity(
            ca_dir, name, role, hosts=hosts, days=days, out_dir=out, force=force
        )
        info = describe_certificate(read_bytes(folder / IDENTITY_CERT, "identity certificate"))
    except PkiError as exc:
        raise _fail(exc) from None
    typer.echo(f"issued {info['spiffe_id']} into {folder}")
    typer.echo(f"  valid until {info['not_after']}")


@pki_app.command("trust")
def trust_command(
    folders: list[Path] = typer.Argument(..., help="Identity folders to update."),
    genesis: Path = typer.Option(
        ..., "--genesis", help="The swarm's genesis: its 'ca_cert' bundles every site's CA."
    ),
) -> None:
    """Make identity folders trust every site CA of a swarm (their ca.crt := the bundle)."""
    try:
        bundle = json.loads(genesis.read_text(encoding="utf-8"))["ca_cert"].encode("ascii")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _fail(PkiError(f"{genesis} is not a genesis file with a 'ca_cert' ({exc})")) from None
    try:
        for folder in folders:
            install_trust(folder, bundle)
            typer.echo(f"{folder / CA_CERT} now trusts the CA(s) of {genesis}")
    except PkiError as exc:
        raise _fail(exc) from None


@pki_app.command("show")
def show_command(
    path: Path = typer.Argument(..., help="A certificate file, an identity folder or a CA folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show who a certificate names, who issued it and whether it is still valid."""
    try:
        file = _certificate_file(path)
        data = read_bytes(file, "certificate")
    except PkiError as exc:
        raise _fail(exc) from None
    try:
        info = describe_certificate(data)
    except PkiError as exc:
        raise _fail(PkiError(f"{file}: {exc}")) from None
    info = {"file": str(file), **info}
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(_format(info))


def _certificate_file(path: Path) -> Path:
    if not path.is_dir():
        return path
    for candidate in (path / IDENTITY_CERT, path / CA_CERT):
        if candidate.is_file():
            return candidate
    raise PkiError(f"no {IDENTITY_CERT} or {CA_CERT} in folder {path}")


def _format(info: dict[str, Any]) -> str:
    rows = [
        ("file", info["file"]),
        ("kind", "certificate authority" if info["kind"] == "ca" else "identity"),
        ("swarm", info["swarm"]),
        ("role", info["role"]),
        ("name", info["name"]),
        ("spiffe id", info["spiffe_id"]),
        ("subject", info["subject"]),
        ("issuer", info["issuer"]),
        ("serial", info["serial"]),
        ("not before", info["not_before"]),
        ("not after", info["not_after"]),
        ("status", info["status"]),
        ("dns names", ", ".join(info["dns_names"])),
        ("ip addresses", ", ".join(info["ip_addresses"])),
        ("uris", ", ".join(info["uris"])),
        ("sha256", info["fingerprint_sha256"]),
        ("problem", info["problem"]),
    ]
    if info["kind"] == "ca":
        rows = [r for r in rows if r[0] not in ("role", "name")]
    return "\n".join(f"{key + ':':<14}{value}" for key, value in rows if value not in (None, ""))
