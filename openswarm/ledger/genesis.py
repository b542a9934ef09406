"""The genesis record: the swarm, its CA, the admitted identities and the initial contracts.

A swarm may instead list `sites`, each with its own CA: `ca_cert` then holds the bundle of
all of them (what TLS trusts), every admitted entry names its `site`, and an identity counts
only from its own site's CA. `admin_quorum` (default 1) is how many admins must approve an
admit, revoke or contract_create before it takes effect.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.canonical import canonical_bytes
from openswarm.ledger.contract import SETTINGS_KEYS, ContractError, ContractSettings
from openswarm.ledger.contract_checks import check_name
from openswarm.pki import ROLES, PkiError, certificate_identity, make_bundle
from openswarm.pki import check_name as check_site_name
from openswarm.pki.certs import ca_swarm, fingerprint, is_ca, load_certificate
from openswarm.pki.trust import bundle_fingerprints

Admitted = tuple[str, str] | tuple[str, str, str]
"""(name, role), or (name, role, site) in a swarm of several site CAs."""


class GenesisError(ValueError):
    """A genesis file that cannot start a ledger."""


def make_genesis(
    swarm: str,
    ca_cert_pem: bytes | None,
    admitted: Iterable[Admitted],
    *,
    contracts: Mapping[str, Mapping[str, Any]] | None = None,
    created: float = 0.0,
    sites: Mapping[str, bytes] | None = None,
    admin_quorum: int = 1,
) -> dict[str, Any]:
    """Build a genesis record; `admitted` holds (name, role) pairs, or (name, role, site)
    triples when `sites` (site name -> its CA certificate) replaces the one `ca_cert_pem`."""
    if (ca_cert_pem is None) == (sites is None):
        raise GenesisError("give either the swarm's CA certificate or its sites' CAs, not both")
    members: dict[str, tuple[str, ...]] = {}
    for name, role, *site in admitted:
        if role not in ROLES:
            raise GenesisError(f"identity {name!r} has unknown role {role!r}; use one of {ROLES}")
        if members.get(name, (role, *site)) != (role, *site):
            raise GenesisError(f"identity {name!r} is admitted twice with different roles")
        members[name] = (role, *site)
    genesis: dict[str, Any] = {"swarm": swarm}
    if sites is None:
        assert ca_cert_pem is not None
        genesis["ca_cert"] = ca_cert_pem.decode("ascii")
    else:
        names = sorted(sites)
        genesis["ca_cert"] = _bundle([sites[n] for n in names]).decode("ascii")
        genesis["sites"] = {n: {"ca_cert": sites[n].decode("ascii")} for n in names}
    genesis["admitted"] = [_entry(n, *rest) for n, rest in sorted(members.items())]
    genesis["contracts"] = {
        name: dict(s)
        for name, s in ({DEFAULT_CONTRACT: {}} if contracts is None else contracts).items()
    }
    genesis["created"] = created
    if admin_quorum != 1 or isinstance(admin_quorum, bool):  # 1 is the default: not written
        genesis["admin_quorum"] = admin_quorum
    check_genesis(genesis)
    return genesis


def _entry(name: str, role: str, site: str | None = None) -> dict[str, str]:
    entry = {"name": name, "role": role}
    if site is not None:
        entry["site"] = site
    return entry


def _bundle(ca_certs: list[bytes]) -> bytes:
    try:
        return make_bundle(ca_certs)
    except PkiError as exc:
        raise GenesisError(f"genesis sites: {exc}") from None


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
    sites = _check_sites(genesis)
    _check_entry_sites(genesis["admitted"], sites)
    _check_quorum(genesis)
    try:
        canonical_bytes(genesis)
    except ValueError as exc:
        raise GenesisError(f"genesis is not canonical JSON: {exc}") from exc
    return genesis


def genesis_sites(genesis: Mapping[str, Any]) -> dict[str, bytes]:
    """Each site's CA certificate (PEM) of a checked genesis; empty with a single CA."""
    return {
        name: site["ca_cert"].encode("ascii") for name, site in genesis.get("sites", {}).items()
    }


def _check_sites(genesis: dict[str, Any]) -> dict[str, str]:
    """site -> fingerprint of its CA; checks each is a CA of this swarm, each distinct, and
    that `ca_cert` holds exactly their bundle."""
    sites = genesis.get("sites")
    if sites is None:
        return {}
    if not isinstance(sites, dict) or not sites:
        raise GenesisError("genesis 'sites' must be an object: site name -> {\"ca_cert\": PEM}")
    prints: dict[str, str] = {}
    keys: set[bytes] = set()
    for name, site in sites.items():
        cert = _site_ca(name, site, genesis["swarm"])
        key = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        if key in keys:
            raise GenesisError(f"genesis site {name!r} shares its CA key with another site")
        keys.add(key)
        prints[name] = fingerprint(cert)
    try:
        bundled = bundle_fingerprints(genesis["ca_cert"].encode("ascii"))
    except (PkiError, UnicodeEncodeError) as exc:
        raise GenesisError(f"genesis 'ca_cert': {exc}") from None
    if bundled != set(prints.values()):
        raise GenesisError(
            "genesis 'ca_cert' must be the bundle of every site's CA certificate, and only "
            "those; write the genesis with 'openswarm ledger genesis --site NAME=CA_DIR …'"
        )
    return prints


def _site_ca(name: Any, site: Any, swarm: str) -> x509.Certificate:
    try:
        check_site_name(name, "site name")
        if not isinstance(site, dict) or set(site) != {"ca_cert"}:
            raise PkiError("must be an object holding only 'ca_cert' (PEM)")
        if not isinstance(site["ca_cert"], str):
            raise PkiError("'ca_cert' must be a PEM string")
        cert = load_certificate(site["ca_cert"].encode("ascii"), "its CA certificate")
    except (PkiError, UnicodeEncodeError) as exc:
        raise GenesisError(f"genesis site {name!r}: {exc}") from None
    if not is_ca(cert):
        raise GenesisError(f"genesis site {name!r}: its ca_cert is not a CA certificate")
    if ca_swarm(cert) != swarm:
        raise GenesisError(
            f"genesis site {name!r}: its CA serves swarm {ca_swarm(cert)!r}, not {swarm!r}; "
            f"each site makes its CA with 'openswarm pki init --swarm {swarm} --site {name}'"
        )
    return cert


def _check_entry_sites(admitted: list[dict[str, Any]], sites: Mapping[str, str]) -> None:
    for entry in admitted:
        site = entry.get("site")
        if not sites and site is not None:
            raise GenesisError(
                f"genesis admitted entry {entry['name']!r} names site {site!r}, but the genesis "
                "lists no sites"
            )
        if sites and (not isinstance(site, str) or site not in sites):
            raise GenesisError(
                f"genesis admitted entry {entry['name']!r} must name its site, one of "
                f"{', '.join(sorted(sites))}: only that site's CA may vouch for it"
            )


def _check_quorum(genesis: dict[str, Any]) -> None:
    quorum = genesis.get("admin_quorum", 1)
    admins = sum(1 for entry in genesis["admitted"] if entry["role"] == "admin")
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 1:
        raise GenesisError("genesis 'admin_quorum' must be a whole number >= 1")
    if quorum > max(admins, 1):
        raise GenesisError(
            f"genesis 'admin_quorum' is {quorum}, but only {admins} admin(s) are admitted; "
            "admit more admins or lower the quorum"
        )


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
