"""The genesis record: the swarm, its CA, the admitted identities and the initial contracts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.canonical import canonical_bytes
from openswarm.ledger.contract import SETTINGS_KEYS, ContractError, ContractSettings
from openswarm.ledger.contract_checks import check_name
from openswarm.pki import ROLES, PkiError, certificate_identity


class GenesisError(ValueError):
    """A genesis file that cannot start a ledger."""


def make_genesis(
    swarm: str,
    ca_cert_pem: bytes,
    admitted: Iterable[tuple[str, str]],
    *,
    contracts: Mapping[str, Mapping[str, Any]] | None = None,
    created: float = 0.0,
) -> dict[str, Any]:
    """Build a genesis record; `admitted` holds (name, role) pairs."""
    members: dict[str, str] = {}
    for name, role in admitted:
        if role not in ROLES:
            raise GenesisError(f"identity {name!r} has unknown role {role!r}; use one of {ROLES}")
        if members.get(name, role) != role:
            raise GenesisError(f"identity {name!r} is admitted twice with different roles")
        members[name] = role
    genesis = {
        "swarm": swarm,
        "ca_cert": ca_cert_pem.decode("ascii"),
        "admitted": [{"name": n, "role": r} for n, r in sorted(members.items())],
        "contracts": {
            name: dict(s)
            for name, s in ({DEFAULT_CONTRACT: {}} if contracts is None else contracts).items()
        },
        "created": created,
    }
    check_genesis(genesis)
    return genesis


def check_genesis(genesis: Any) -> dict[str, Any]:
    """Validate a parsed genesis record and return it."""
    if not isinstance(genesis, dict):
        raise GenesisError("genesis must be a JSON object")
    for key, kind in (("swarm", str), ("ca_cert", str), ("admitted", list), ("contracts", dict)):
        if not isinstance(genesis.get(key), kind):
            raise GenesisError(f"genesis field {key!r} is missing or not a {kind.__name__}")
    for name, settings in genesis["contracts"].items():
        try:
            check_name(name, "contract name")
            if not isinstance(settings, dict) or set(settings) - set(SETTINGS_KEYS):
                raise ContractError(
                    f"settings of contract {name!r} must be an object with keys among "
                    f"{', '.join(SETTINGS_KEYS)}"
                )
            ContractSettings.from_payload(settings)
        except ContractError as exc:
            raise GenesisError(f"genesis contract {name!r}: {exc}") from None
    for entry in genesis["admitted"]:
        if not isinstance(entry, dict) or entry.get("role") not in ROLES:
            raise GenesisError(f"genesis admitted entry {entry!r} needs a name and a valid role")
        if not isinstance(entry.get("name"), str):
            raise GenesisError(f"genesis admitted entry {entry!r} needs a string name")
    try:
        canonical_bytes(genesis)
    except ValueError as exc:
        raise GenesisError(f"genesis is not canonical JSON: {exc}") from exc
    return genesis


def load_genesis(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GenesisError(
            f"genesis file {path} does not exist; create it with 'openswarm ledger genesis'"
        ) from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GenesisError(f"cannot read genesis file {path}: {exc}") from exc
    return check_genesis(data)


def admitted_from_pki(ca_dir: Path) -> list[tuple[str, str]]:
    """Every identity issued under ca_dir/identities, as (name, role) pairs."""
    pairs = []
    for cert in sorted((ca_dir / "identities").glob("*/identity.crt")):
        try:
            info = certificate_identity(cert.read_bytes())
        except PkiError as exc:
            raise GenesisError(f"{cert}: {exc}") from exc
        pairs.append((info.name, info.role))
    return pairs
