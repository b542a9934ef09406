"""The swarm's certificate authority: create it and issue identities from it."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from openswarm.pki.certs import as_utc, ca_swarm, is_ca, load_certificate
from openswarm.pki.errors import PkiError
from openswarm.pki.files import make_dir, read_bytes, write_atomic, write_private
from openswarm.pki.keys import generate_key, key_to_pem, load_private_key, same_public_key
from openswarm.pki.names import (
    RESERVED_HOST_SUFFIX,
    check_name,
    check_role,
    identity_host,
    role_host,
    spiffe_id,
)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SWARM_FILE = "swarm.json"
IDENTITIES = "identities"
IDENTITY_CERT = "identity.crt"
IDENTITY_KEY = "identity.key"

_CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH

CLOCK_SKEW = timedelta(minutes=5)
"""How far in the past certificates start, so peers with slightly late clocks accept them."""

DEFAULT_HOSTS = ("localhost", "127.0.0.1")

_HOSTNAME = re.compile(r"(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?")


def init_ca(
    ca_dir: Path, swarm: str, *, days: int = 3650, force: bool = False, site: str | None = None
) -> Path:
    """Create the swarm's CA in `ca_dir`: ca.crt, ca.key (mode 0600) and swarm.json.

    With `site`, the CA is that site's own (one of several of the swarm): its subject names
    the site, so that every site CA of a trust bundle is told apart. Refuses (PkiError) if
    a CA already exists there, unless `force`. Returns `ca_dir`.
    """
    ca_dir = Path(ca_dir)
    check_name(swarm, "swarm name")
    if site is not None:
        check_name(site, "site name")
    _check_days(days)
    existing = [p for p in (ca_dir / CA_CERT, ca_dir / CA_KEY) if p.exists()]
    if existing and not force:
        raise PkiError(
            f"a CA already exists in {ca_dir} ({', '.join(p.name for p in existing)}); "
            "refusing to overwrite it (use --force to replace it and invalidate its identities)"
        )
    make_dir(ca_dir)
    key = generate_key()
    now = datetime.now(UTC)
    names = [
        x509.NameAttribute(NameOID.COMMON_NAME, f"openswarm CA {swarm}"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, swarm),
    ]
    if site is not None:
        names[0] = x509.NameAttribute(NameOID.COMMON_NAME, f"openswarm CA {swarm} site {site}")
        names.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site))
    subject = x509.Name(names)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id(swarm))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    write_private(ca_dir / CA_KEY, key_to_pem(key))
    write_atomic(ca_dir / CA_CERT, cert.public_bytes(Encoding.PEM))
    about = {"swarm": swarm} if site is None else {"swarm": swarm, "site": site}
    write_atomic(ca_dir / SWARM_FILE, (json.dumps(about, indent=2) + "\n").encode())
    return ca_dir


def load_ca_cert(ca_dir_or_file: Path | str) -> bytes:
    """The CA certificate (PEM) from a CA or identity folder (its ca.crt) or a file."""
    path = Path(ca_dir_or_file)
    if path.is_dir():
        path = path / CA_CERT
    data = read_bytes(path, "CA certificate")
    cert = load_certificate(data, f"CA certificate {path}")
    if not is_ca(cert):
        raise PkiError(f"{path} is not a CA certificate")
    return data


def issue_identity(
    ca_dir: Path,
    name: str,
    role: str,
    *,
    hosts: Sequence[str] = (),
    days: int = 365,
    out_dir: Path | None = None,
    not_before: datetime | None = None,
    force: bool = False,
) -> Path:
    """Issue the identity `spiffe://SWARM/ROLE/NAME` from the CA in `ca_dir`.

    Writes identity.crt, identity.key (mode 0600) and ca.crt into `out_dir` (default
    `ca_dir/identities/NAME`) and returns that folder. `hosts` become DNS or IP SANs
    (default: localhost and 127.0.0.1). Validity runs from `not_before` (default: now, less
    a few minutes for clock skew) for `days`, capped at the CA's expiry. Refuses to
    overwrite an existing identity unless `force`.
    """
    ca_dir = Path(ca_dir)
    check_name(name)
    check_role(role)
    _check_days(days)
    if isinstance(hosts, str):
        hosts = [hosts]
    san_hosts = _host_names(hosts or DEFAULT_HOSTS)
    reserved = [
        h
        for h in (hosts or ())
        if str(h).strip().lower().rstrip(".").endswith(RESERVED_HOST_SUFFIX)
    ]
    if reserved:
        raise PkiError(
            f"host {reserved[0]!r} is reserved: names ending in {RESERVED_HOST_SUFFIX} state "
            "an identity's role and name and are added by the CA itself"
        )
    san_hosts += [x509.DNSName(role_host(role)), x509.DNSName(identity_host(role, name))]
    folder = Path(out_dir) if out_dir is not None else ca_dir / IDENTITIES / name
    existing = [p for p in (folder / IDENTITY_CERT, folder / IDENTITY_KEY) if p.exists()]
    if existing and not force:
        raise PkiError(
            f"an identity already exists in {folder}; refusing to overwrite it (use --force)"
        )
    ca_pem, ca_cert, ca_key = _load_ca(ca_dir)
    swarm = ca_swarm(ca_cert)
    if swarm is None:
        raise PkiError(f"CA certificate in {ca_dir} names no swarm")
    check_name(swarm, "swarm name")

    origin = as_utc(not_before) if not_before is not None else datetime.now(UTC)
    start = origin if not_before is not None else origin - CLOCK_SKEW
    end = min(origin + timedelta(days=days), ca_cert.not_valid_after_utc)
    if end <= start:
        raise PkiError(f"the CA in {ca_dir} expires before the requested validity starts")
    key = generate_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, swarm),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, _CLIENT_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(spiffe_id(swarm, role, name)), *san_hosts]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    make_dir(folder)
    write_private(folder / IDENTITY_KEY, key_to_pem(key))
    write_atomic(folder / IDENTITY_CERT, cert.public_bytes(Encoding.PEM))
    write_atomic(folder / CA_CERT, ca_pem)
    return folder


def _load_ca(ca_dir: Path) -> tuple[bytes, x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_pem = load_ca_cert(ca_dir / CA_CERT)
    ca_cert = load_certificate(ca_pem)
    key_path = ca_dir / CA_KEY
    ca_key = load_private_key(read_bytes(key_path, "CA key"), f"CA key {key_path}")
    if not same_public_key(ca_key.public_key(), ca_cert.public_key()):
        raise PkiError(f"CA key {key_path} does not match CA certificate {ca_dir / CA_CERT}")
    return ca_pem, ca_cert, ca_key


def _host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        if isinstance(host, str):
            host = host.strip()
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not isinstance(host, str) or not _HOSTNAME.fullmatch(host) or len(host) > 253:
            raise PkiError(f"invalid host {host!r}: expected a DNS name or an IP address")
        names.append(x509.DNSName(host.lower()))
    return names


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise PkiError(f"invalid validity {days!r}: days must be a positive whole number")
